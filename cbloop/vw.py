"""Opening VW workspaces the same way everywhere."""

from __future__ import annotations

import shlex
from pathlib import Path

import vowpalwabbit

from cbloop.errors import InvalidInput


class ModelLoadError(InvalidInput):
    """VW could not load a model file."""


def open_workspace(
    vw_args: str, model_path: Path | None = None, extra: str = ""
) -> vowpalwabbit.Workspace:
    """A `--dsjson` workspace for `vw_args`, optionally initialised from a model file."""
    # An argument list, not a string: pyvw splits strings on whitespace, paths included.
    args = [*shlex.split(vw_args), "--dsjson", "--quiet", *shlex.split(extra)]
    if model_path is not None:
        args += ["-i", str(model_path)]
    try:
        return vowpalwabbit.Workspace(arg_list=args)
    except RuntimeError as exc:  # VW reports bad model files and bad options as RuntimeError
        raise ModelLoadError(f"VW could not load {model_path or 'a fresh model'}: {exc}") from exc
