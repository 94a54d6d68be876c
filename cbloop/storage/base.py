"""The object-store interface the registry, the event shipper and the pipeline share."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cbloop.errors import TransientError


class StorageError(TransientError):
    """The store could not complete an operation."""

    hint = (
        "check storage in the settings (backend, S3 endpoint, bucket, credentials) "
        "and that the store is reachable"
    )


class ObjectNotFound(StorageError, KeyError):
    """No object at that key."""


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    #: Changes whenever the object changes (an ETag, or mtime and size locally).
    version: str


class ObjectStore(Protocol):
    """Keys are '/'-separated and relative, e.g. 'models/default/current'."""

    def put_bytes(self, key: str, data: bytes) -> None:
        """Write `data` at `key`, replacing any object atomically."""

    def get_bytes(self, key: str) -> bytes:
        """Raise ObjectNotFound when absent."""

    def put_file(self, key: str, path: Path) -> None: ...

    def get_file(self, key: str, dest: Path) -> None: ...

    def list(self, prefix: str) -> list[ObjectInfo]:
        """Every object whose key starts with `prefix`, sorted by key."""

    def stat(self, key: str) -> ObjectInfo | None: ...

    def delete(self, key: str) -> None: ...

    def local_path(self, key: str) -> Path | None:
        """The file behind `key` when the store is a local folder, else None."""
