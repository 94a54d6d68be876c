"""Crafted event-log segments, and the pipeline steps to run on them, for tests/pipeline.

Segment files are written as text in the event-log layout, so every test states exactly which
lines exist; expected labels are then computed by hand in the tests.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import orjson

from cbloop.settings import ExperimentSettings, Settings
from cbloop.storage import LocalStore
from cbloop_pipeline.ingest import ingest
from cbloop_pipeline.join import run_join
from cbloop_pipeline.warehouse import connect

T0 = datetime(2026, 11, 22, 12, 0, 0)
_seq = itertools.count(1)


def at(seconds: float) -> datetime:
    """T0 plus `seconds` (naive UTC, as the warehouse stores times)."""
    return T0 + timedelta(seconds=seconds)


def iso(moment: datetime) -> str:
    return moment.replace(tzinfo=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def decision(
    event_id: str,
    seconds: float,
    *,
    chosen: int = 0,
    n_actions: int = 3,
    p_chosen: float = 0.8,
    sample_prob: float = 0.1,
    deferred: bool = False,
    experiment: str = "default",
    model_id: str = "m-1",
    context: dict[str, Any] | None = None,
) -> str:
    """A decision line as the service logs it; `chosen` is the 0-based index into _multi."""
    rest = (1.0 - p_chosen) / (n_actions - 1)
    order = [chosen, *(k for k in range(n_actions) if k != chosen)]
    c = {
        **(context if context is not None else {"user": {"city": "paris", "age": 31}}),
        "_multi": [{"ActionId": {"id": f"a{k}"}} for k in range(n_actions)],
    }
    return orjson.dumps(
        {
            "EventId": event_id,
            "Timestamp": iso(at(seconds)),
            "Version": "1",
            "a": [k + 1 for k in order],
            "p": [p_chosen, *([rest] * (n_actions - 1))],
            "c": c,
            "VWState": {"m": model_id},
            "experiment": experiment,
            "model_id": model_id,
            "action_ids": [f"a{k}" for k in range(n_actions)],
            "sample_prob": sample_prob,
            "deferred": deferred,
        }
    ).decode()


def reward(event_id: str, seconds: float, value: float, key: str | None = None) -> str:
    return orjson.dumps(
        {
            "EventId": event_id,
            "Timestamp": iso(at(seconds)),
            "kind": "reward",
            "value": value,
            "idempotency_key": key,
        }
    ).decode()


def activate(event_id: str, seconds: float) -> str:
    return orjson.dumps(
        {
            "EventId": event_id,
            "Timestamp": iso(at(seconds)),
            "kind": "activate",
            "idempotency_key": None,
        }
    ).decode()


@dataclass
class EventLogFolder:
    """Writes closed (or open) segments under a storage root, as the service would."""

    root: Path
    written: list[Path] = field(default_factory=list)

    def segment(self, kind: str, lines: list[str], *, closed: bool = True, hour: int = 12) -> Path:
        name = f"testhost-1-1-{next(_seq):06d}.jsonl" + ("" if closed else ".open")
        path = self.root / "events" / kind / "date=2026-11-22" / f"hour={hour:02d}" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        self.written.append(path)
        return path

    def decisions(self, *lines: str, closed: bool = True) -> Path:
        return self.segment("decisions", list(lines), closed=closed)

    def outcomes(self, *lines: str, closed: bool = True) -> Path:
        return self.segment("outcomes", list(lines), closed=closed)


@dataclass
class Pipeline:
    """Runs the pipeline steps the CLI runs, on one settings' storage and warehouse."""

    settings: Settings

    @property
    def store(self) -> LocalStore:
        return LocalStore(self.settings.storage.root)

    def connect(self) -> duckdb.DuckDBPyConnection:
        return connect(self.settings.warehouse)

    def ingest(self, **kw: Any) -> Any:
        con = self.connect()
        try:
            return ingest(con, self.store, **kw)
        finally:
            con.close()

    def join(
        self,
        as_of: datetime,
        experiment: str = "default",
        settings: ExperimentSettings | None = None,
    ) -> Any:
        con = self.connect()
        try:
            return run_join(
                con,
                self.store,
                experiment,
                settings or self.settings.experiment(experiment),
                as_of=as_of,
            )
        finally:
            con.close()

    def exported(self, key: str) -> list[dict[str, Any]]:
        return [orjson.loads(line) for line in self.lines(key)]

    def lines(self, key: str) -> list[str]:
        text = (self.settings.storage.root / key).read_text(encoding="utf-8")
        return text.splitlines()

    def labels(self, job: Any) -> dict[str, tuple[float, str]]:
        """event id -> (_label_cost, split) over both exported files of `job`."""
        out: dict[str, tuple[float, str]] = {}
        for split, key in (("train", job.train_key), ("eval", job.eval_key)):
            for obj in self.exported(key):
                assert obj["EventId"] not in out, f"{obj['EventId']} exported twice"
                out[obj["EventId"]] = (obj["_label_cost"], split)
        return out

    def query(self, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        con = self.connect()
        try:
            return [tuple(r) for r in con.execute(sql, params).fetchall()]
        finally:
            con.close()


PipelineFactory = Callable[..., Pipeline]
