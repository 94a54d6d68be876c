"""What the learned data holds, namespace by namespace, and the warnings it deserves.

Read from the joined exports (the lines VW learns), so what is counted is exactly what VW
sees: shared namespaces in `c`, action namespaces in each `_multi` entry. Warnings:
- ID-like: a string feature whose number of distinct values is close to the number of rows
  it appears in (a user id, a timestamp as text): it cannot generalise and costs hash slots.
- constant: a feature with one value in every row it appears in: it carries no signal.
- namespace collision: VW keys a namespace by its first character for interactions and
  --ignore, so `user` and `utm` are one namespace to `-q ua` and to `--ignore u`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

#: A string feature is ID-like when distinct values >= this share of its rows...
ID_LIKE_SHARE = 0.9
#: ...and it appears in at least this many rows (a handful of rows is too few to tell).
MIN_ROWS = 20
#: Distinct values remembered per feature; beyond it a feature counts as "many".
_MAX_DISTINCT = 1_000_000


@dataclass
class FeatureCount:
    rows: int = 0
    values: set[Any] = field(default_factory=set)
    categorical: bool = False


@dataclass(frozen=True)
class DataWarning:
    kind: str  # "id_like" | "constant" | "collision"
    namespace: str
    feature: str | None
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "namespace": self.namespace,
            "feature": self.feature,
            "message": self.message,
        }


@dataclass
class NamespaceStats:
    """scope: "shared" (context) or "action"."""

    name: str
    scope: str
    rows: int = 0
    features: dict[str, FeatureCount] = field(default_factory=dict)

    @property
    def first_char(self) -> str:
        return self.name[0]


@dataclass
class DataStats:
    events: int = 0
    namespaces: dict[tuple[str, str], NamespaceStats] = field(default_factory=dict)

    def groups(self) -> dict[str, list[str]]:
        """VW namespace index (first character) -> the namespace names sharing it."""
        out: dict[str, list[str]] = {}
        for ns in self.namespaces.values():
            names = out.setdefault(ns.first_char, [])
            if ns.name not in names:
                names.append(ns.name)
        return dict(sorted(out.items()))

    def warnings(self) -> list[DataWarning]:
        found: list[DataWarning] = []
        for char, names in self.groups().items():
            if len(names) > 1:
                found.append(
                    DataWarning(
                        "collision",
                        ", ".join(names),
                        None,
                        f"namespaces {', '.join(names)} share VW's first character {char!r}: "
                        "interactions and --ignore treat them as one; rename one",
                    )
                )
        for ns in self.namespaces.values():
            for feature, count in sorted(ns.features.items()):
                where = f"{ns.name}.{feature}"
                distinct = len(count.values)
                if count.rows >= 2 and distinct == 1:
                    found.append(
                        DataWarning(
                            "constant",
                            ns.name,
                            feature,
                            f"{where} ({ns.scope}) has one value in all {count.rows} rows: "
                            "it carries no signal",
                        )
                    )
                elif (
                    count.categorical
                    and count.rows >= MIN_ROWS
                    and distinct >= ID_LIKE_SHARE * count.rows
                ):
                    found.append(
                        DataWarning(
                            "id_like",
                            ns.name,
                            feature,
                            f"{where} ({ns.scope}) has {distinct} distinct values in "
                            f"{count.rows} rows: ID-like, it cannot generalise",
                        )
                    )
        return found


def _add(stats: DataStats, scope: str, name: str, features: object) -> None:
    if not isinstance(features, dict):
        return
    key = (scope, name)
    ns = stats.namespaces.get(key)
    if ns is None:
        ns = stats.namespaces[key] = NamespaceStats(name, scope)
    ns.rows += 1
    for feature, value in features.items():
        count = ns.features.get(feature)
        if count is None:
            count = ns.features[feature] = FeatureCount()
        count.rows += 1
        if isinstance(value, str | bool):
            count.categorical = True
        if len(count.values) < _MAX_DISTINCT:
            count.values.add(value if not isinstance(value, list | dict) else repr(value))


def _namespaces(obj: dict[str, Any]) -> Iterable[tuple[str, object]]:
    return ((k, v) for k, v in obj.items() if k and not k.startswith("_"))


def collect(paths: Iterable[Path]) -> DataStats:
    """Namespace and feature counts over every line of the joined files."""
    stats = DataStats()
    for path in paths:
        with path.open("rb") as fh:
            for raw in fh:
                if not raw.strip():
                    continue
                line = orjson.loads(raw)
                c = line.get("c") if isinstance(line, dict) else None
                if not isinstance(c, dict):
                    continue
                stats.events += 1
                for name, features in _namespaces(c):
                    _add(stats, "shared", name, features)
                multi = c.get("_multi")
                for action in multi if isinstance(multi, list) else ():
                    if isinstance(action, dict):
                        for name, features in _namespaces(action):
                            _add(stats, "action", name, features)
    return stats
