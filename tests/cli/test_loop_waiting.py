"""`loop --once` on a fresh install says why nothing was learned yet."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cli_helpers import CliRun, write_config
from fastapi.testclient import TestClient

from cbloop.settings import load_settings
from cbloop_service.app import create_app

ACTIONS = [{"id": a, "features": {"item": {"kind": a}}} for a in ("news", "sports", "food")]


def _rank(client: TestClient, event_id: str) -> None:
    body = {"event_id": event_id, "context": {"user": {"age": 30}}, "actions": ACTIONS}
    answer = client.post("/v1/rank", json=body)
    assert answer.status_code == 200, answer.text


def _moment(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)


def test_a_first_loop_names_the_windows_open_segments_and_missing_events(
    tmp_path: Path, run_cli: CliRun
) -> None:
    config = write_config(
        tmp_path / "config.yaml",
        {
            "storage": {"root": str(tmp_path / "data")},
            "logging": {"format": "text"},
            "eventlog": {"segment_max_seconds": 3600},
            "experiments": {"default": {"reward": {"wait_seconds": 600}}},
        },
    )
    settings = load_settings(config, env={})
    started = datetime.now(UTC)
    # Three decisions in segments the service closed when it stopped ...
    with TestClient(create_app(settings)) as client:
        for n in range(3):
            _rank(client, f"closed-{n}")
        assert client.post("/v1/events/closed-0/reward", json={"value": 1}).status_code == 202
    # ... and two in a segment a running service still has open.
    with TestClient(create_app(settings)) as client:
        _rank(client, "open-0")
        _rank(client, "open-1")

        result = run_cli(config, "loop", "--once")

    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "waiting:" in out
    window = re.search(
        r"(\d+) decision\(s\) wait for their reward window \(reward.wait_seconds=600\): "
        r"the first closes at (\S+ \S+)Z, the last at (\S+ \S+)Z",
        out,
    )
    assert window is not None, out
    assert window.group(1) == "3"
    first, last = _moment(window.group(2)), _moment(window.group(3))
    assert started + timedelta(seconds=599) <= first <= last
    assert last <= datetime.now(UTC) + timedelta(seconds=601)
    spool = re.search(
        r"(\d+) segment\(s\) still open in the spool with (\d+) decision\(s\) and (\d+) "
        r"outcome\(s\), closed by about (\S+ \S+)Z \(eventlog.segment_max_seconds=3600\)",
        out,
    )
    assert spool is not None, out
    assert (spool.group(1), spool.group(2), spool.group(3)) == ("1", "2", "0")
    assert _moment(spool.group(4)) >= started + timedelta(seconds=3599)
    assert "0 joined eval event(s), 100 short of promotion.min_events=100" in out
