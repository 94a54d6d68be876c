"""/readyz tells whether the event log can take a line, on a real (tiny) full filesystem."""

from __future__ import annotations

import errno
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from service_helpers import ClientFactory, rank_body

TMPFS_SIZE = "24m"  # room for the models; the test fills the rest


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({result.stderr.strip()}): needs root")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def _fill(directory: Path) -> Path:
    """Write a file until the filesystem is full (ENOSPC); return it."""
    filler = directory / f"filler-{uuid.uuid4().hex}"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        for block in (1 << 20, 4096):
            while True:
                try:
                    os.write(fd, b"\0" * block)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC
                    break
    finally:
        os.close(fd)
    return filler


def test_readyz_is_503_while_the_log_filesystem_is_full_and_ready_again_after(
    tiny_fs: Path, make_client: ClientFactory
) -> None:
    client = make_client(storage={"root": str(tiny_fs / "data")})
    assert client.post("/v1/rank", json=rank_body()).status_code == 200
    assert client.get("/readyz").status_code == 200

    filler = _fill(tiny_fs)
    ready = client.get("/readyz")
    assert ready.status_code == 503, ready.text
    body = ready.json()
    assert body["log_writable"] is False
    assert "bytes free" in body["log_problem"]
    assert "eventlog.min_free_bytes" in body["log_problem"]

    os.unlink(filler)
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["log_problem"] is None
    assert client.post("/v1/rank", json=rank_body()).status_code == 200


def test_readyz_reports_the_last_write_error_until_a_write_works_again(
    tiny_fs: Path, make_client: ClientFactory
) -> None:
    # With no free-space margin, only the failed write itself tells readiness.
    client = make_client(storage={"root": str(tiny_fs / "data")}, eventlog={"min_free_bytes": 0})
    assert client.post("/v1/rank", json=rank_body()).status_code == 200
    filler = _fill(tiny_fs)
    failed = 0
    for i in range(50):  # the open segment's last page may still take a line or two
        failed += client.post("/v1/rank", json=rank_body(event_id=f"full-{i}")).status_code == 503
    assert failed > 0
    ready = client.get("/readyz")
    assert ready.status_code == 503, ready.text
    assert "last write failed" in ready.json()["log_problem"]

    os.unlink(filler)
    assert client.get("/readyz").status_code == 200
    assert client.post("/v1/rank", json=rank_body()).status_code == 200
