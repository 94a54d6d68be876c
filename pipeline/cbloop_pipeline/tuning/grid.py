"""Candidate learning settings for `cbloop search`: the default grid, or one from a YAML file.

A grid names values per dimension and the search tries every combination:

    interactions:            # VW interaction flags (any whitelisted learning flags)
      - "--interactions :A"
      - "--interactions :A --interactions ::"
    bits: [18]               # -b
    learning_rate: [null, 0.1]   # -l; null keeps VW's default
    exploration:             # the experiment's `exploration` section
      - {type: squarecb, gamma_scale: 10}
      - {type: egreedy, epsilon: 0.05}

A missing dimension keeps the experiment's current value. Every candidate is validated the
way the experiment's own settings are (VW-argument whitelist, exploration bounds), so a
candidate the search could pick is one the experiment could run.
"""

from __future__ import annotations

import itertools
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from cbloop.errors import ConfigError
from cbloop.settings import ExperimentSettings

#: Above this many combinations a grid is refused: each one is a training and a scoring run.
MAX_CANDIDATES = 200

#: What `cbloop search` tries without --grid (documented in the README): 2 x 2 x 3 = 12.
DEFAULT_GRID: dict[str, list[Any]] = {
    "interactions": ["--interactions :A", "--interactions :A --interactions ::"],
    "bits": [18],
    "learning_rate": [None, 0.1],
    "exploration": [
        {"type": "squarecb", "gamma_scale": 10.0},
        {"type": "squarecb", "gamma_scale": 100.0},
        {"type": "egreedy", "epsilon": 0.05},
    ],
}

_DIMENSIONS = ("interactions", "bits", "learning_rate", "exploration")
#: Flags a grid dimension sets; taken out of the experiment's own vw_args when it does.
_BIT_FLAGS = ("-b", "--bit_precision")
_RATE_FLAGS = ("-l", "--learning_rate")
_INTERACTION_FLAGS = (
    "-q",
    "--quadratic",
    "--cubic",
    "--interactions",
    "--experimental_full_name_interactions",
)


class GridError(ConfigError):
    """A grid file that cannot be read or holds an invalid candidate; names the problem."""

    hint = "fix the grid file (see the README's 'Policy search')"


@dataclass(frozen=True)
class Candidate:
    """One learning setting: the experiment's settings with vw_args and exploration replaced."""

    name: str
    settings: ExperimentSettings

    @property
    def vw_args(self) -> str:
        return self.settings.vw_args

    @property
    def exploration(self) -> dict[str, Any]:
        return self.settings.exploration.model_dump()

    def vw_arguments(self) -> str:
        return self.settings.vw_arguments()

    def key(self) -> tuple[tuple[str, ...], ...]:
        """The VW arguments as a set of flag groups: equal keys are the same learner."""
        return canonical(self.vw_arguments())

    def describe(self) -> str:
        e = self.settings.exploration
        detail = {
            "egreedy": f"epsilon={e.epsilon:g}",
            "bag": f"num_policies={e.num_policies} epsilon={e.epsilon:g}",
            "cover": f"num_policies={e.num_policies} epsilon={e.epsilon:g}",
            "softmax": f"lambda={e.lambda_:g}",
            "squarecb": f"gamma_scale={e.gamma_scale:g}",
        }[e.type]
        return f"{self.vw_args} | {e.type} {detail}"


def canonical(vw_arguments: str) -> tuple[tuple[str, ...], ...]:
    """Flags with their values, in sorted order (VW does not care about the order)."""
    groups: list[tuple[str, ...]] = []
    for token in shlex.split(vw_arguments):
        if (token.startswith("-") and not _is_number(token)) or not groups:
            groups.append((token,))
        else:
            groups[-1] = (*groups[-1], token)
    return tuple(sorted(groups))


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _without(tokens: list[str], flags: Sequence[str]) -> list[str]:
    """`tokens` minus every occurrence of `flags` (with their values)."""
    out: list[str] = []
    i = 0
    while i < len(tokens):
        flag, eq, _ = tokens[i].partition("=")
        if flag in flags:
            i += 1 if eq else 2
            continue
        out.append(tokens[i])
        i += 1
    return out


def _vw_args(base: str, interactions: str | None, bits: int | None, rate: float | None) -> str:
    tokens = shlex.split(base)
    extra: list[str] = []
    if interactions is not None:
        tokens = _without(tokens, _INTERACTION_FLAGS)
        extra += shlex.split(interactions)
    if bits is not None:
        tokens = _without(tokens, _BIT_FLAGS)
        extra += ["-b", str(bits)]
    if rate is not None:
        tokens = _without(tokens, _RATE_FLAGS)
        extra += ["-l", repr(float(rate))]
    return shlex.join([*extra, *tokens])


def candidate(
    base: ExperimentSettings, *, vw_args: str, exploration: Mapping[str, Any], name: str
) -> Candidate:
    """`base` with `vw_args` and `exploration` replaced, validated as experiment settings."""
    data = base.model_dump()
    data["vw_args"] = vw_args
    data["exploration"] = {**data["exploration"], **exploration}
    try:
        settings = ExperimentSettings.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise GridError(
            f"candidate {name} ({vw_args!r}, {dict(exploration)}): {where}: {first['msg']}"
        ) from None
    return Candidate(name, settings)


def current_candidate(base: ExperimentSettings) -> Candidate:
    return Candidate("current", base)


def expand(grid: Mapping[str, Any], base: ExperimentSettings) -> list[Candidate]:
    """Every combination of the grid's values, applied to `base`; duplicates dropped."""
    unknown = sorted(set(grid) - set(_DIMENSIONS))
    if unknown:
        raise GridError(
            f"unknown grid key(s) {', '.join(unknown)}; known: {', '.join(_DIMENSIONS)}"
        )
    values: dict[str, list[Any]] = {}
    for key in _DIMENSIONS:
        raw = grid.get(key)
        if raw is None:
            values[key] = [None]
            continue
        if not isinstance(raw, list) or not raw:
            raise GridError(f"grid key {key!r} must be a non-empty list, got {raw!r}")
        values[key] = [_checked(key, v) for v in raw]
    combos = list(itertools.product(*(values[k] for k in _DIMENSIONS)))
    if len(combos) > MAX_CANDIDATES:
        raise GridError(f"the grid has {len(combos)} combinations; at most {MAX_CANDIDATES}")
    out: list[Candidate] = []
    seen: set[tuple[tuple[str, ...], ...]] = set()
    for interactions, bits, rate, exploration in combos:
        name = f"c{len(out) + 1:02d}"
        cand = candidate(
            base,
            vw_args=_vw_args(base.vw_args, interactions, bits, rate),
            exploration=exploration or {},
            name=name,
        )
        learner = cand.key()
        if learner not in seen:
            seen.add(learner)
            out.append(cand)
    return out


def _checked(key: str, value: Any) -> Any:
    """Type checks per dimension; the settings model checks the rest."""
    if key == "interactions" and not isinstance(value, str):
        raise GridError(f"grid key 'interactions': each entry must be a string, got {value!r}")
    if key == "bits" and (isinstance(value, bool) or not isinstance(value, int)):
        raise GridError(f"grid key 'bits': each entry must be an integer, got {value!r}")
    if key == "bits" and not 1 <= value <= 30:
        raise GridError(f"grid key 'bits': {value} is outside 1..30")
    if (
        key == "learning_rate"
        and value is not None
        and (isinstance(value, bool) or not isinstance(value, int | float) or value <= 0)
    ):
        raise GridError(
            f"grid key 'learning_rate': each entry must be a positive number or null, got {value!r}"
        )
    if key == "exploration" and not isinstance(value, dict):
        raise GridError(f"grid key 'exploration': each entry must be a mapping, got {value!r}")
    return value


def load_grid(path: Path) -> dict[str, Any]:
    """The grid mapping of a YAML file; raises GridError naming the file and the problem."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise GridError(f"cannot read grid file {path}: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise GridError(f"grid file {path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise GridError(f"grid file {path} must hold a mapping of grid keys to lists")
    return data


def grid_candidates(path: Path | None, base: ExperimentSettings) -> list[Candidate]:
    """The candidates of a grid file (or the default grid) for an experiment."""
    if path is None:
        return expand(DEFAULT_GRID, base)
    try:
        return expand(load_grid(path), base)
    except GridError as exc:
        if str(path) in str(exc):
            raise
        raise GridError(f"grid file {path}: {exc}") from exc
