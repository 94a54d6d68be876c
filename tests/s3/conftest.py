"""A real S3-compatible server for the S3 integration tests: moto's standalone server.

It listens on a free loopback port and speaks S3 over HTTP, so boto3 runs unpatched. The
server runs in this process, which lets a test stop it (an outage: connections are refused)
and start it again on the same port with the bucket contents intact.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from moto.server import ThreadedMotoServer

from cbloop.settings import Settings
from cbloop.storage.s3 import S3Store


class MotoS3:
    """moto's S3 server on 127.0.0.1 that can be stopped and restarted on its port."""

    def __init__(self) -> None:
        self.port = 0
        self._server: ThreadedMotoServer | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> None:
        if self._server is not None:
            return
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        server.start()
        self.port = server.get_host_and_port()[1]
        self._server = server

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.stop()
        # stop() only ends the serve loop; closing the listening socket too makes clients
        # see "connection refused", which is what a dead S3 endpoint looks like.
        if server._server is not None:
            server._server.server_close()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[MotoS3]:
    """One server for the session; tests keep apart by using their own bucket."""
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = MotoS3()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def outage_server() -> Iterator[MotoS3]:
    """A server of the test's own, free to be stopped and restarted."""
    server = MotoS3()
    server.start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def aws_test_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Dummy credentials through boto3's usual chain (environment), nothing else.

    Keeps a developer's ~/.aws profile and the EC2 metadata lookup out of the tests; child
    processes inherit the same environment.
    """
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    for name in list(os.environ):
        if name.startswith("CBLOOP_"):
            monkeypatch.delenv(name)


S3SettingsFactory = Callable[..., Settings]


@pytest.fixture
def make_s3_settings(
    make_settings: Callable[..., Settings], s3_server: MotoS3
) -> S3SettingsFactory:
    """Settings with backend s3 on a fresh bucket (created) of the given server.

    make_s3_settings(server=outage_server, eventlog={"segment_max_seconds": 0.2})
    """
    bucket = f"cbloop-{uuid.uuid4().hex[:12]}"

    def factory(server: MotoS3 | None = None, **overrides: Any) -> Settings:
        target = server or s3_server
        storage = {
            "backend": "s3",
            "s3": {
                "bucket": bucket,
                "prefix": "deploy",
                "endpoint_url": target.endpoint,
                "region": "us-east-1",
            },
        }
        settings = make_settings(storage=storage, **overrides)
        S3Store.from_settings(settings.storage.s3).ensure_bucket()
        return settings

    return factory
