"""Talking to the real service: starting `cbloop serve` and sending it ranks and rewards.

The simulation is a user of the system, so it only goes through the service's public HTTP
API; it never imports `service/`. A started service runs as a child process on a free
loopback port and is stopped with SIGTERM, so it closes its event-log segments cleanly.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from cbloop.errors import TransientError

logger = logging.getLogger(__name__)

_LOG_TAIL_BYTES = 4000


class ServiceError(TransientError):
    """The service could not be started, or answered a request with an error."""


def default_serve_command() -> tuple[str, ...]:
    """The `cbloop serve` of this very installation: the console script next to the running
    interpreter, not whatever `cbloop` is first on PATH. The CLI passes its own instead."""
    return (str(Path(sys.executable).with_name("cbloop")), "serve")


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS considers free right now (the service binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class ServiceProcess:
    """`cbloop serve` as a child process, with its output in `log_path`."""

    def __init__(
        self,
        config: Path,
        log_path: Path,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        workers: int = 1,
        env: dict[str, str] | None = None,
        serve_command: Sequence[str] | None = None,
    ) -> None:
        """`serve_command`: the program and arguments that run `cbloop serve` (the options
        below are appended); default `default_serve_command()`."""
        self.serve_command = tuple(serve_command or default_serve_command())
        self.config = config
        self.log_path = log_path
        self.host = host
        self.port = port if port is not None else free_port(host)
        self.workers = workers
        self.env = env
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def command(self) -> list[str]:
        return [
            *self.serve_command,
            "--config",
            str(self.config),
            "--port",
            str(self.port),
            "--workers",
            str(self.workers),
        ]

    def start(self, timeout: float = 60.0) -> None:
        # The generated config is the whole truth for this service: CBLOOP_* overrides in
        # our environment were meant for some other deployment.
        base = os.environ if self.env is None else self.env
        env = {k: v for k, v in base.items() if not k.startswith("CBLOOP_")}
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
            )
        logger.info("started cbloop serve (pid %d) on %s", self._proc.pid, self.url)
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with httpx.Client(base_url=self.url, timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self._proc is not None and self._proc.poll() is not None:
                    raise ServiceError(
                        f"cbloop serve exited with code {self._proc.returncode}:\n{self.log_tail()}"
                    )
                try:
                    if client.get("/readyz").status_code == 200:
                        return
                except httpx.TransportError:
                    pass  # not listening yet
                time.sleep(0.1)
        raise ServiceError(f"cbloop serve was not ready within {timeout:.0f}s:\n{self.log_tail()}")

    def log_tail(self) -> str:
        try:
            data = self.log_path.read_bytes()
        except FileNotFoundError:
            return "(no service log)"
        return data[-_LOG_TAIL_BYTES:].decode(errors="replace")

    def stop(self, timeout: float = 15.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            logger.warning("cbloop serve did not stop within %.0fs; killing it", timeout)
            proc.kill()
            proc.wait()

    def __enter__(self) -> ServiceProcess:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


@dataclass(frozen=True)
class RankRequest:
    event_id: str
    context: dict[str, Any]
    actions: list[dict[str, object]]


@dataclass(frozen=True)
class Decision:
    event_id: str
    model_id: str
    action_id: str
    probability: float


#: The world's answer to a decision: the reward to send back.
RewardFn = Callable[[RankRequest, Decision], float]


class ServiceClient:
    """A pooled HTTP client for rank and reward calls, with a few calls in flight at once."""

    def __init__(
        self,
        url: str,
        experiment: str,
        *,
        api_key: str | None = None,
        concurrency: int = 8,
        timeout: float = 30.0,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        self.experiment = experiment
        self.concurrency = concurrency
        self._client = httpx.Client(
            base_url=url.rstrip("/"), headers=headers, limits=limits, timeout=timeout
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> ServiceClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            response = self._client.post(path, json=body)
        except httpx.TransportError as exc:
            raise ServiceError(f"POST {path} failed: {exc}") from exc
        if response.status_code >= 300:
            raise ServiceError(
                f"POST {path} answered {response.status_code}: {response.text[:500]}"
            )
        payload: dict[str, Any] = response.json()
        return payload

    def rank(self, request: RankRequest) -> Decision:
        answer = self._post(
            "/v1/rank",
            {
                "experiment": self.experiment,
                "event_id": request.event_id,
                "context": request.context,
                "actions": request.actions,
            },
        )
        return Decision(
            event_id=str(answer["event_id"]),
            model_id=str(answer["model_id"]),
            action_id=str(answer["action_id"]),
            probability=float(answer["probability"]),
        )

    def reward(self, event_id: str, value: float) -> None:
        self._post(f"/v1/events/{event_id}/reward", {"value": value})

    def model_id(self) -> str | None:
        """The model the service says it serves for the experiment (None if it has none)."""
        try:
            # A fresh connection per poll: a kept-alive one always reaches the same worker.
            response = self._client.get(
                f"/v1/experiments/{self.experiment}/model", headers={"Connection": "close"}
            )
        except httpx.TransportError as exc:
            raise ServiceError(f"GET model failed: {exc}") from exc
        if response.status_code == 404:
            return None
        if response.status_code >= 300:
            raise ServiceError(f"GET model answered {response.status_code}: {response.text[:500]}")
        answer = response.json()
        model = answer.get("model_id")
        return str(model) if model is not None else None

    def wait_for_model(self, model_id: str, timeout: float, *, confirmations: int = 3) -> None:
        """Until the service serves `model_id`.

        With several workers each poll may reach a different one, so `confirmations` answers
        in a row must agree. Should a worker still lag, the rank answers name its model and
        the round's record shows it.
        """
        deadline = time.monotonic() + timeout
        agreeing = 0
        last: str | None = None
        while time.monotonic() < deadline:
            last = self.model_id()
            agreeing = agreeing + 1 if last == model_id else 0
            if agreeing >= confirmations:
                return
            time.sleep(0.05)
        raise ServiceError(
            f"the service still serves {last!r} {timeout:.0f}s after {model_id!r} was deployed"
        )

    def play(
        self, requests: list[RankRequest], reward_of: RewardFn
    ) -> list[tuple[Decision, float]]:
        """Rank each request and send the reward the world gives for the chosen action.

        Results keep the order of `requests`; a failed call fails the whole round.
        """

        def one(request: RankRequest) -> tuple[Decision, float]:
            decision = self.rank(request)
            value = reward_of(request, decision)
            self.reward(decision.event_id, value)
            return decision, value

        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="sim-http") as pool:
            return list(pool.map(one, requests))
