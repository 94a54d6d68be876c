"""Local files for objects VW must read: the object itself on a local store, else a copy."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

from cbloop.errors import InvalidInput
from cbloop.storage import ObjectNotFound, ObjectStore


class MissingData(InvalidInput, FileNotFoundError):
    """A data object the pipeline recorded is not in the store."""


def local_file(store: ObjectStore, key: str, work: Path) -> Path:
    local = store.local_path(key)
    if local is None:
        local = work / key.replace("/", "__")
        try:
            store.get_file(key, local)
        except ObjectNotFound:
            raise MissingData(f"{key} is not in the store") from None
    elif not local.is_file():
        raise MissingData(f"{key} is not in the store")
    return local


def single_file(paths: Sequence[Path], dest: Path) -> Path:
    """VW reads one -d file, so several are concatenated into `dest`; one is used as is."""
    if len(paths) == 1:
        return paths[0]
    with dest.open("wb") as out:
        for path in paths:
            with path.open("rb") as src:
                shutil.copyfileobj(src, out, length=1 << 20)
            # A last line without its newline would run into the next file's first line.
            if path.stat().st_size and not _ends_with_newline(path):
                out.write(b"\n")
    return dest


def _ends_with_newline(path: Path) -> bool:
    with path.open("rb") as fh:
        fh.seek(-1, 2)
        return fh.read(1) == b"\n"
