"""Helpers of the dashboard tests: the simulated run's facts and a live dashboard server."""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import uvicorn

from cbloop.settings import Settings
from cbloop_pipeline.dashboard.app import create_app

CHROMIUM = Path("/usr/bin/chromium")
BROWSER_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
NO_BROWSER = (
    "no headless browser: install Debian's chromium (`apt-get update && apt-get install -y "
    "chromium chromium-driver`, or run .ci/install-browser as root); Playwright for Python "
    "comes with the dev dependencies and drives /usr/bin/chromium"
)


@dataclass(frozen=True)
class Simulated:
    settings: Settings
    config: Path
    snapshot: Path
    static_dir: Path
    loops: int
    per_loop: int
    warm_start: int


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveServer:
    """The dashboard app on a real uvicorn server in a thread (real lifespan)."""

    def __init__(self, settings: Settings, snapshot: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            create_app(settings, snapshot=snapshot),
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            access_log=False,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.05)
        raise RuntimeError("dashboard server did not start")

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
