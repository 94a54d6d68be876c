"""S3Store against moto's standalone S3 server on loopback (real HTTP, no boto3 mock)."""

from __future__ import annotations

import logging
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from moto.server import ThreadedMotoServer

from cbloop.settings import S3Settings, StorageSettings
from cbloop.storage import ObjectNotFound, StorageError, open_store
from cbloop.storage.s3 import S3Store, S3Timeouts


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()
    if server._server is not None:  # stop() leaves the listening socket open
        server._server.server_close()


@pytest.fixture(autouse=True)
def fake_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Keep the developer's own AWS profile and the instance-metadata lookup out of the tests.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)


def new_store(endpoint: str, prefix: str = "cbloop", bucket: str | None = None) -> S3Store:
    settings = S3Settings(
        bucket=bucket or f"test-{uuid.uuid4().hex[:12]}",
        prefix=prefix,
        endpoint_url=endpoint,
        region="us-east-1",
    )
    store = S3Store.from_settings(settings)
    store.ensure_bucket()
    return store


@pytest.fixture
def store(endpoint: str) -> S3Store:
    return new_store(endpoint)


def test_bytes_round_trip_under_the_prefix(store: S3Store) -> None:
    store.put_bytes("models/default/current", b'{"model_id": "m-1"}')

    assert store.get_bytes("models/default/current") == b'{"model_id": "m-1"}'
    raw = store.client.list_objects_v2(Bucket=store.bucket)
    assert [o["Key"] for o in raw["Contents"]] == ["cbloop/models/default/current"]


def test_an_empty_prefix_uses_keys_as_they_are(endpoint: str) -> None:
    store = new_store(endpoint, prefix="")
    store.put_bytes("a/b.txt", b"x")

    assert [o.key for o in store.list("a/")] == ["a/b.txt"]
    raw = store.client.list_objects_v2(Bucket=store.bucket)
    assert [o["Key"] for o in raw["Contents"]] == ["a/b.txt"]


def test_missing_objects_raise_object_not_found_or_stat_none(
    store: S3Store, tmp_path: Path
) -> None:
    with pytest.raises(ObjectNotFound):
        store.get_bytes("models/default/current")
    with pytest.raises(ObjectNotFound):
        store.get_file("models/default/m-1/model.vw", tmp_path / "model.vw")
    assert store.stat("models/default/current") is None
    assert list(tmp_path.iterdir()) == []  # no partial or temp file left behind


def test_files_round_trip_and_get_file_replaces_the_destination(
    store: S3Store, tmp_path: Path
) -> None:
    source = tmp_path / "model.vw"
    source.write_bytes(bytes(range(256)) * 4096)
    store.put_file("models/default/m-1/model.vw", source)
    dest = tmp_path / "out" / "model.vw"
    dest.parent.mkdir()
    dest.write_bytes(b"stale")

    store.get_file("models/default/m-1/model.vw", dest)

    assert dest.read_bytes() == source.read_bytes()
    assert sorted(p.name for p in dest.parent.iterdir()) == ["model.vw"]


def test_list_pages_through_every_object_and_returns_relative_sorted_keys(
    store: S3Store, endpoint: str
) -> None:
    store.list_page_size = 2
    keys = [f"events/decisions/date=2026-11-22/hour=12/w-{n:06d}.jsonl" for n in (3, 1, 5, 2, 4)]
    for key in keys:
        store.put_bytes(key, key.encode())
    store.put_bytes("events/outcomes/date=2026-11-22/hour=12/w-000001.jsonl", b"o")
    # Same bucket, other prefix: another deployment's objects must not show up.
    neighbour = new_store(endpoint, prefix="other", bucket=store.bucket)
    neighbour.put_bytes("events/decisions/x.jsonl", b"n")

    found = store.list("events/decisions/")

    assert [o.key for o in found] == sorted(keys)
    assert [o.size for o in found] == [len(k) for k in sorted(keys)]
    assert len(store.list("events/")) == 6
    assert store.list("nothing/") == []


def test_stat_version_changes_when_the_object_changes(store: S3Store) -> None:
    store.put_bytes("models/default/current", b'{"model_id": "m-1"}')
    first = store.stat("models/default/current")
    store.put_bytes("models/default/current", b'{"model_id": "m-2"}')
    second = store.stat("models/default/current")

    assert first is not None
    assert second is not None
    assert first.version != second.version
    assert second.size == len(b'{"model_id": "m-2"}')
    assert second.version == store.list("models/default/")[0].version


def test_delete_removes_and_tolerates_missing_objects(store: S3Store) -> None:
    store.put_bytes("joined/default/j-1/train.dsjson", b"{}\n")
    store.delete("joined/default/j-1/train.dsjson")
    store.delete("joined/default/j-1/train.dsjson")

    assert store.stat("joined/default/j-1/train.dsjson") is None
    assert store.local_path("joined/default/j-1/train.dsjson") is None


@pytest.mark.parametrize("key", ["", "/abs", "a/../b"])
def test_keys_must_be_relative(store: S3Store, key: str) -> None:
    with pytest.raises(StorageError):
        store.put_bytes(key, b"x")


def test_a_missing_bucket_is_a_storage_error_not_a_missing_object(endpoint: str) -> None:
    store = S3Store.from_settings(
        S3Settings(bucket="no-such-bucket-here", endpoint_url=endpoint, region="us-east-1")
    )
    with pytest.raises(StorageError) as info:
        store.get_bytes("models/default/current")
    assert not isinstance(info.value, ObjectNotFound)


def test_an_unreachable_server_is_a_storage_error(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a loopback port with nobody listening
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    store = S3Store.from_settings(
        S3Settings(bucket="cbloop", endpoint_url=f"http://127.0.0.1:{port}", region="us-east-1"),
        S3Timeouts(connect_seconds=0.5, read_seconds=0.5, max_attempts=1),
    )
    with pytest.raises(StorageError):
        store.put_bytes("models/default/current", b"x")
    with pytest.raises(StorageError):
        store.stat("models/default/current")
    with pytest.raises(StorageError):
        store.get_file("models/default/m-1/model.vw", tmp_path / "model.vw")
    assert list(tmp_path.iterdir()) == []


def test_open_store_builds_an_s3_store_from_storage_settings(endpoint: str) -> None:
    settings = StorageSettings(
        backend="s3", s3=S3Settings(bucket="cbloop-open", endpoint_url=endpoint)
    )
    store = open_store(settings)

    assert isinstance(store, S3Store)
    store.ensure_bucket()
    store.ensure_bucket()  # a second call finds it and leaves it alone
    store.put_bytes("k", b"v")
    assert store.get_bytes("k") == b"v"
