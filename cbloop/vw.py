"""Opening VW workspaces the same way everywhere."""

from __future__ import annotations

import shlex
from pathlib import Path

import vowpalwabbit


class ModelLoadError(RuntimeError):
    """VW could not load a model file."""


def open_workspace(
    vw_args: str, model_path: Path | None = None, extra: str = ""
) -> vowpalwabbit.Workspace:
    """A `--dsjson` workspace for `vw_args`, optionally initialised from a model file."""
    parts = [vw_args, "--dsjson --quiet", extra]
    if model_path is not None:
        parts.append(f"-i {shlex.quote(str(model_path))}")
    try:
        return vowpalwabbit.Workspace(" ".join(p for p in parts if p))
    except RuntimeError as exc:  # VW reports bad model files and bad options as RuntimeError
        raise ModelLoadError(f"VW could not load {model_path or 'a fresh model'}: {exc}") from exc
