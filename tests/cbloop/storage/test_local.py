"""The local-folder object store: the contract the registry, shipper and pipeline rely on."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cbloop.settings import StorageSettings
from cbloop.storage import LocalStore, ObjectInfo, ObjectNotFound, StorageError, open_store


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "root")


def _files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_put_then_get_returns_the_bytes(store: LocalStore) -> None:
    store.put_bytes("models/default/current", b'{"model_id": "m-1"}')
    assert store.get_bytes("models/default/current") == b'{"model_id": "m-1"}'


def test_get_of_a_missing_key_raises_object_not_found(store: LocalStore) -> None:
    with pytest.raises(ObjectNotFound) as info:
        store.get_bytes("models/none")
    assert isinstance(info.value, KeyError)
    assert isinstance(info.value, StorageError)


def test_get_of_a_folder_is_not_an_object(store: LocalStore) -> None:
    store.put_bytes("a/b", b"x")
    with pytest.raises(ObjectNotFound):
        store.get_bytes("a")


def test_put_replaces_and_leaves_no_temp_file(store: LocalStore) -> None:
    store.put_bytes("k/v", b"first, longer value")
    store.put_bytes("k/v", b"second")
    assert store.get_bytes("k/v") == b"second"
    assert _files(store.root) == ["k/v"]


def test_put_file_and_get_file_copy_whole_files(store: LocalStore, tmp_path: Path) -> None:
    src = tmp_path / "model.vw"
    src.write_bytes(os.urandom(100_000))
    store.put_file("models/x/model.vw", src)
    dest = tmp_path / "out" / "copy.vw"
    store.get_file("models/x/model.vw", dest)
    assert dest.read_bytes() == src.read_bytes()
    assert _files(store.root) == ["models/x/model.vw"]


def test_put_file_is_synced_to_disk_before_it_gets_its_name(
    store: LocalStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced_sizes: list[int] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced_sizes.append(os.fstat(fd).st_size)
        real_fsync(fd)

    src = tmp_path / "model.vw"
    src.write_bytes(b"w" * 5000)
    monkeypatch.setattr(os, "fsync", recording_fsync)
    store.put_file("models/x/model.vw", src)
    assert 5000 in synced_sizes


def test_put_file_replaces_an_existing_object(store: LocalStore, tmp_path: Path) -> None:
    src = tmp_path / "f"
    src.write_bytes(b"new")
    store.put_bytes("k", b"old contents")
    store.put_file("k", src)
    assert store.get_bytes("k") == b"new"


def test_put_file_of_the_object_itself_keeps_it(store: LocalStore) -> None:
    store.put_bytes("k", b"same")
    local = store.local_path("k")
    assert local is not None
    store.put_file("k", local)
    assert store.get_bytes("k") == b"same"


def test_get_file_of_a_missing_key_raises_object_not_found(
    store: LocalStore, tmp_path: Path
) -> None:
    with pytest.raises(ObjectNotFound):
        store.get_file("nope", tmp_path / "dest")
    assert not (tmp_path / "dest").exists()


def test_list_returns_objects_under_a_prefix_sorted_with_sizes(store: LocalStore) -> None:
    store.put_bytes("models/default/m2/model.vw", b"22")
    store.put_bytes("models/default/m1/model.vw", b"1")
    store.put_bytes("models/other/m3/model.vw", b"333")
    store.put_bytes("events/decisions/x.jsonl", b"line\n")
    found = store.list("models/default/")
    assert [(o.key, o.size) for o in found] == [
        ("models/default/m1/model.vw", 1),
        ("models/default/m2/model.vw", 2),
    ]
    assert all(isinstance(o, ObjectInfo) and o.version for o in found)


def test_list_prefix_may_end_inside_a_name(store: LocalStore) -> None:
    store.put_bytes("models/default/a", b"")
    store.put_bytes("models/defaults/b", b"")
    store.put_bytes("models/other/c", b"")
    assert [o.key for o in store.list("models/def")] == ["models/default/a", "models/defaults/b"]
    assert [o.key for o in store.list("models/default")] == [
        "models/default/a",
        "models/defaults/b",
    ]
    assert [o.key for o in store.list("models/default/")] == ["models/default/a"]


def test_list_of_everything_and_of_nothing(store: LocalStore) -> None:
    store.root.mkdir(parents=True)
    (store.root.parent / "beside-the-root").write_bytes(b"not ours")
    assert store.list("") == []
    store.put_bytes("a/b", b"1")
    store.put_bytes("c", b"2")
    assert [o.key for o in store.list("")] == ["a/b", "c"]
    assert store.list("missing/") == []
    assert store.list("missing/deeper/") == []


def test_list_hides_temp_files_of_writes_in_progress(store: LocalStore) -> None:
    store.put_bytes("models/default/current", b"{}")
    # What a put interrupted between its temp write and its rename leaves behind.
    (store.root / "models/default/.tmp-abc123").write_bytes(b"half")
    assert [o.key for o in store.list("models/")] == ["models/default/current"]


def test_stat_reports_size_and_none_when_missing(store: LocalStore) -> None:
    assert store.stat("k") is None
    store.put_bytes("k", b"12345")
    info = store.stat("k")
    assert info is not None
    assert (info.key, info.size) == ("k", 5)
    assert store.list("k") == [info]


def test_version_changes_on_every_replace_even_with_same_size_and_mtime(
    store: LocalStore,
) -> None:
    store.put_bytes("models/default/current", b"aaaa")
    first = store.stat("models/default/current")
    path = store.root / "models/default/current"
    st = path.stat()
    store.put_bytes("models/default/current", b"bbbb")
    # File mtimes tick coarsely; two quick same-size writes can share one.
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    second = store.stat("models/default/current")
    assert first is not None and second is not None
    assert second.size == first.size
    assert second.version != first.version


def test_version_is_stable_while_the_object_is_unchanged(store: LocalStore) -> None:
    store.put_bytes("k", b"v")
    first = store.stat("k")
    store.get_bytes("k")
    assert store.stat("k") == first


def test_delete_removes_and_tolerates_missing(store: LocalStore) -> None:
    store.put_bytes("a/b", b"x")
    store.delete("a/b")
    assert store.stat("a/b") is None
    with pytest.raises(ObjectNotFound):
        store.get_bytes("a/b")
    store.delete("a/b")


def test_local_path_is_the_file_behind_the_key(store: LocalStore) -> None:
    store.put_bytes("models/default/m/model.vw", b"weights")
    path = store.local_path("models/default/m/model.vw")
    assert path == store.root / "models/default/m/model.vw"
    assert path.read_bytes() == b"weights"


@pytest.mark.parametrize("key", ["../outside", "a/../../outside", "/etc/passwd", "a/../.."])
def test_keys_escaping_the_root_are_refused(store: LocalStore, key: str) -> None:
    with pytest.raises(StorageError, match="escapes the storage root"):
        store.put_bytes(key, b"x")
    with pytest.raises(StorageError, match="escapes"):
        store.get_bytes(key)
    with pytest.raises(StorageError, match="escapes"):
        store.delete(key)
    with pytest.raises(StorageError, match="escapes"):
        store.stat(key)
    with pytest.raises(StorageError, match="escapes"):
        store.list(key + "/")
    assert not (store.root.parent / "outside").exists()


def test_symlink_out_of_the_root_is_refused(store: LocalStore, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    store.root.mkdir(parents=True)
    (store.root / "link").symlink_to(outside)
    with pytest.raises(StorageError, match="escapes"):
        store.put_bytes("link/file", b"x")
    assert list(outside.iterdir()) == []


def test_open_store_gives_a_local_store_on_the_configured_root(tmp_path: Path) -> None:
    store = open_store(StorageSettings(root=tmp_path / "data"))
    store.put_bytes("x", b"1")
    assert (tmp_path / "data" / "x").read_bytes() == b"1"
