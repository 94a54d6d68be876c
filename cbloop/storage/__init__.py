"""Storage backends behind one interface: a local folder (default) or S3."""

from __future__ import annotations

from cbloop.settings import StorageSettings
from cbloop.storage.base import ObjectInfo, ObjectNotFound, ObjectStore, StorageError
from cbloop.storage.local import LocalStore

__all__ = [
    "LocalStore",
    "ObjectInfo",
    "ObjectNotFound",
    "ObjectStore",
    "StorageError",
    "open_store",
]


def open_store(settings: StorageSettings) -> ObjectStore:
    if settings.backend == "s3":
        # Imported here so the local default never needs boto3 loaded.
        from cbloop.storage.s3 import S3Store  # noqa: PLC0415

        store: ObjectStore = S3Store.from_settings(settings.s3)
        return store
    return LocalStore(settings.root)
