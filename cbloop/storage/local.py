"""Object store on a local folder; writes are atomic through a temp file and rename."""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Concatenate, ParamSpec, TypeVar

from cbloop.storage.base import ObjectInfo, ObjectNotFound, StorageError

_TMP_PREFIX = ".tmp-"

_P = ParamSpec("_P")
_R = TypeVar("_R")
_Method = Callable[Concatenate["LocalStore", str, _P], _R]


def _storage_errors(action: str) -> Callable[[_Method[_P, _R]], _Method[_P, _R]]:
    """The interface promises StorageError: a full disk or a refused permission is one too."""

    def decorate(method: _Method[_P, _R]) -> _Method[_P, _R]:
        @functools.wraps(method)
        def wrapper(self: LocalStore, key: str, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
            try:
                return method(self, key, *args, **kwargs)
            except OSError as exc:
                raise StorageError(f"local {action} of {key!r} failed: {exc}") from exc

        return wrapper

    return decorate


class LocalStore:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root != path and self.root not in path.parents:
            raise StorageError(f"key {key!r} escapes the storage root")
        return path

    @_storage_errors("write")
    def put_bytes(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX, dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @_storage_errors("read")
    def get_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            raise ObjectNotFound(key) from None

    @_storage_errors("write")
    def put_file(self, key: str, path: Path) -> None:
        dest = self._path(key)
        if dest == path.resolve():
            return
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX, dir=dest.parent)
        os.close(fd)
        try:
            shutil.copyfile(path, tmp)
            _fsync(tmp)  # as put_bytes: a crash must not leave a named but empty model file
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @_storage_errors("read")
    def get_file(self, key: str, dest: Path) -> None:
        src = self._path(key)
        if not src.is_file():
            raise ObjectNotFound(key)
        if dest.resolve() != src:
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dest)

    @_storage_errors("list")
    def list(self, prefix: str) -> list[ObjectInfo]:
        base = self._path(prefix.rstrip("/")) if prefix.strip("/") else self.root
        # Like S3, "models/default" also matches "models/defaults/..."; only "/" ends a folder.
        at_folder = base == self.root or (prefix.endswith("/") and base.is_dir())
        start = base if at_folder else base.parent
        if not start.exists():
            return []
        found = []
        for path in start.rglob("*"):
            if path.name.startswith(_TMP_PREFIX) or not path.is_file():
                continue
            key = path.relative_to(self.root).as_posix()
            if key.startswith(prefix):
                try:
                    st = path.stat()
                except FileNotFoundError:  # renamed or deleted (e.g. a segment closing) mid-walk
                    continue
                found.append(ObjectInfo(key, st.st_size, _version(st)))
        return sorted(found, key=lambda o: o.key)

    @_storage_errors("stat")
    def stat(self, key: str) -> ObjectInfo | None:
        try:
            st = self._path(key).stat()
        except FileNotFoundError:
            return None
        return ObjectInfo(key, st.st_size, _version(st))

    @_storage_errors("delete")
    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def local_path(self, key: str) -> Path | None:
        return self._path(key)


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _version(st: os.stat_result) -> str:
    # mtime ticks coarsely (ms), so two same-size writes can share it; every atomic
    # replace brings a new inode, which tells them apart.
    return f"{st.st_ino}-{st.st_mtime_ns}-{st.st_size}"
