"""Ingest + join + export against a hand-written DuckDB query over the same files.

Both sides start from the same closed segments (generated once, not timed) and write the same
train/eval DSJSON: every decision, labelled with the earliest reward inside its window or the
default 0.0, split by sample_prob. The floor reads the raw files with plain DuckDB SQL and
keeps no books: no warehouse, no dedup, no late/orphan accounting, no job ledger. It is timed
in two shapes (labelled lines in a temp table then one COPY per file; one COPY with
PARTITION_BY) and the faster one counts.
cbloop's side runs exactly what `cbloop ingest` and `cbloop join` run, on a fresh warehouse.
The same-run ratio (ours / floor) is the figure; the target is at most 1.5.
"""

from __future__ import annotations

import logging
import random
import resource
import shutil
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import duckdb
import orjson
import typer

from cbloop.clock import format_ts
from cbloop.encoding import (
    Namespaces,
    build_vw_context,
    decision_line,
    encode_context,
    outcome_line,
)
from cbloop.eventlog.layout import Kind, segment_key
from cbloop.settings import Settings, load_settings

logger = logging.getLogger(__name__)

TARGET_RATIO = 1.5
ACTIONS = 5
WRITERS = 2
SEGMENT_SECONDS = 60.0
#: Decisions per second of simulated traffic; sets the span the events cover.
RATE = 100.0
WAIT_SECONDS = 600.0
BACKWARD_SECONDS = 60.0
TRAIN_RATIO = 0.8
_EPOCH = datetime(2026, 11, 22, 0, 0, tzinfo=UTC)

_CITIES = ("paris", "berlin", "madrid", "rome", "lisbon", "vienna", "oslo", "prague", "dublin")
_DEVICES = ("ios", "android", "web")
_REFERRERS = ("search", "social", "direct", "email")
_CATEGORIES = ("news", "sports", "tech", "food", "travel", "music", "finance")


def run(out_dir: Path, quick: bool = False) -> dict[str, Any]:
    """`cbloop bench --only join`: 1M decisions / 300k rewards (quick: 50k / 15k)."""
    n_decisions, n_rewards = (50_000, 15_000) if quick else (1_000_000, 300_000)
    return run_sizes(out_dir, n_decisions, n_rewards)


def run_sizes(out_dir: Path, n_decisions: int, n_rewards: int) -> dict[str, Any]:
    out_dir.mkdir(parents=True, exist_ok=True)
    data = out_dir / "storage"
    generate(data, n_decisions, n_rewards, seed=7)
    floors: dict[str, tuple[float, float]] = {}
    for variant in FLOOR_VARIANTS:
        floor_dir = out_dir / f"floor-{variant}"
        shutil.rmtree(floor_dir, ignore_errors=True)
        floor_dir.mkdir()
        floors[variant] = _timed(f"floor ({variant})", partial(floor, data, floor_dir, variant))
    best = min(floors, key=lambda v: floors[v][0])
    floor_s, floor_cpu = floors[best]
    floor_dir = out_dir / f"floor-{best}"
    settings = _settings(out_dir, data)
    ours_s, figures = _ours(settings)
    train_key, eval_key = figures["train_key"], figures["eval_key"]
    same = _same_lines(floor_dir / "train.dsjson", data / train_key) and _same_lines(
        floor_dir / "eval.dsjson", data / eval_key
    )
    ratio = ours_s["total"] / floor_s
    result = {
        "decisions": n_decisions,
        "rewards": n_rewards,
        "floor_seconds": round(floor_s, 3),
        "floor_variant": best,
        "floor_variants_seconds": {v: round(t[0], 3) for v, t in floors.items()},
        "floor_cpu_seconds": round(floor_cpu, 3),
        "ours_cpu_seconds": round(ours_s["cpu"], 3),
        "cpu_ratio": round(ours_s["cpu"] / floor_cpu, 3),
        "ingest_seconds": round(ours_s["ingest"], 3),
        "join_seconds": round(ours_s["join"], 3),
        "ours_seconds": round(ours_s["total"], 3),
        "ratio": round(ratio, 3),
        "target_ratio": TARGET_RATIO,
        "same_export": same,
        "joined": figures["joined"],
        "train_events": figures["train_events"],
        "eval_events": figures["eval_events"],
    }
    ours_cpu = ours_s["cpu"]
    lines = [f"join bench: {n_decisions:,} decisions, {n_rewards:,} rewards"]
    lines += [f"  floor, {v:<27s}{t:7.2f} s  (cpu {c:6.2f} s)" for v, (t, c) in floors.items()]
    lines += [
        f"  floor (the faster)                {floor_s:7.2f} s",
        f"  cbloop ingest                     {ours_s['ingest']:7.2f} s",
        f"  cbloop join + export              {ours_s['join']:7.2f} s",
        f"  cbloop total                      {ours_s['total']:7.2f} s  (cpu {ours_cpu:6.2f} s)",
        f"  ratio cbloop / floor              {ratio:7.2f}  (target <= {TARGET_RATIO})",
        f"  cpu ratio cbloop / floor          {ours_cpu / floor_cpu:7.2f}",
        f"  same export as the floor: {'yes' if same else 'NO'}",
    ]
    typer.echo("\n".join(lines))
    return result


def _timed(what: str, step: Callable[[], object]) -> tuple[float, float]:
    """(wall, CPU) seconds of `step`; CPU counts every DuckDB thread of this process."""
    logger.info("bench step", extra={"step": what})
    start, start_cpu = time.perf_counter(), _cpu()
    step()
    return time.perf_counter() - start, _cpu() - start_cpu


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _settings(out_dir: Path, data: Path) -> Settings:
    warehouse = out_dir / "warehouse.duckdb"
    for stale in (warehouse, warehouse.with_name(warehouse.name + ".wal")):
        stale.unlink(missing_ok=True)
    shutil.rmtree(data / "joined", ignore_errors=True)
    config = out_dir / "config.yaml"
    config.write_text(
        orjson.dumps(
            {
                "storage": {"root": str(data)},
                "warehouse": {"path": str(warehouse)},
                "logging": {"level": "WARNING", "format": "text"},
                "experiments": {
                    "default": {
                        "reward": {
                            "wait_seconds": WAIT_SECONDS,
                            "backward_seconds": BACKWARD_SECONDS,
                            "default": 0.0,
                            "aggregation": "earliest",
                        },
                        "split": {"train_ratio": TRAIN_RATIO},
                    }
                },
            }
        ).decode()
    )
    return load_settings(config, env={})


def _ours(settings: Settings) -> tuple[dict[str, float], dict[str, Any]]:
    # The same calls `cbloop ingest` and `cbloop join` make.
    from cbloop.storage import open_store
    from cbloop_pipeline.ingest import ingest
    from cbloop_pipeline.join import run_join
    from cbloop_pipeline.warehouse import connect

    store = open_store(settings.storage)
    as_of = _EPOCH + timedelta(days=30)
    start, start_cpu = time.perf_counter(), _cpu()
    con = connect(settings.warehouse)
    try:
        ingested = ingest(con, store)
        middle = time.perf_counter()
        job = run_join(con, store, "default", settings.experiment("default"), as_of=as_of)
    finally:
        con.close()
    end, cpu = time.perf_counter(), _cpu() - start_cpu
    logger.info("bench ingest", extra={"lines": ingested.decision_lines + ingested.outcome_lines})
    return (
        {"ingest": middle - start, "join": end - middle, "total": end - start, "cpu": cpu},
        job.to_json(),
    )


# --------------------------------------------------------------------------------------------
# The floor


#: The floor's two shapes; the faster one in the run is the floor.
FLOOR_VARIANTS = ("materialized", "partitioned")
_WRITE = "FORMAT csv, HEADER false, QUOTE '', ESCAPE '', DELIMITER '\x1f'"


def floor(data: Path, out: Path, variant: str = "materialized") -> None:
    """The plain query: read every segment, label each decision, write train and eval.

    Rewards are gathered per event first (a few per event); each decision line then takes the
    earliest one inside its window. "materialized" keeps the labelled lines in a temp table
    and writes each file from it; "partitioned" is a single COPY ... PARTITION_BY (split).
    """
    con = duckdb.connect()
    try:
        con.execute("SET enable_progress_bar = false")
        con.execute(_floor_rewards_sql(data))
        labelled = _floor_labelled_sql(data)
        if variant == "partitioned":
            con.execute(f"COPY ({labelled}) TO '{out / 'parts'}' ({_WRITE}, PARTITION_BY (split))")
            for split in ("train", "eval"):
                [part] = sorted((out / "parts" / f"split={split}").glob("*.csv"))
                part.replace(out / f"{split}.dsjson")
            shutil.rmtree(out / "parts")
            return
        con.execute(f"CREATE TEMP TABLE labelled AS {labelled}")
        for split in ("train", "eval"):
            con.execute(
                f"COPY (SELECT line FROM labelled WHERE split = '{split}') "
                f"TO '{out / f'{split}.dsjson'}' ({_WRITE})"
            )
    finally:
        con.close()


def _floor_rewards_sql(data: Path) -> str:
    outcomes = data / "events" / "outcomes" / "**" / "*.jsonl"
    return f"""
        CREATE TEMP TABLE rewards AS
        SELECT EventId AS event_id, list({{'ts': Timestamp, 'value': value}}) AS r
        FROM read_json('{outcomes}', format = 'newline_delimited',
                       columns = {{'EventId': 'VARCHAR', 'Timestamp': 'TIMESTAMP',
                                   'kind': 'VARCHAR', 'value': 'DOUBLE'}})
        WHERE kind = 'reward'
        GROUP BY EventId
    """


def _floor_labelled_sql(data: Path) -> str:
    decisions = data / "events" / "decisions" / "**" / "*.jsonl"
    return f"""
        WITH d AS (
            SELECT line, json_transform(line, '{{"EventId": "VARCHAR", "Timestamp": "TIMESTAMP",
                "a": "BIGINT[]", "p": "DOUBLE[]", "sample_prob": "DOUBLE"}}') AS j
            FROM read_csv('{decisions}', columns = {{'line': 'VARCHAR'}}, delim = '\x1f',
                          quote = '', escape = '', header = false, auto_detect = false)
        ),
        labelled AS (
            SELECT d.line, d.j,
                   coalesce(list_sort(list_filter(r.r, lambda x:
                       x.ts BETWEEN d.j.Timestamp - INTERVAL {BACKWARD_SECONDS:g} SECOND
                                AND d.j.Timestamp + INTERVAL {WAIT_SECONDS:g} SECOND
                   ))[1].value, 0.0) AS reward
            FROM d LEFT JOIN rewards r ON r.event_id = d.j.EventId
        )
        SELECT '{{"_label_cost":' || CAST(0.0 - reward AS VARCHAR)
               || ',"_label_probability":' || CAST(j.p[1] AS VARCHAR)
               || ',"_label_Action":' || CAST(j.a[1] AS VARCHAR)
               || ',"_labelIndex":' || CAST(j.a[1] - 1 AS VARCHAR)
               || ',' || substr(line, 2) AS line,
               CASE WHEN j.sample_prob < {TRAIN_RATIO} THEN 'train' ELSE 'eval' END AS split
        FROM labelled
    """


def _same_lines(a: Path, b: Path) -> bool:
    """Same multiset of lines (order may differ): count and an order-free checksum."""
    con = duckdb.connect()
    try:
        figures = [
            con.execute(
                f"""
                SELECT count(*), sum(hash(line)::HUGEINT)
                FROM read_csv('{path}', columns = {{'line': 'VARCHAR'}}, delim = '\x1f',
                              quote = '', escape = '', header = false, auto_detect = false)
                """
            ).fetchone()
            for path in (a, b)
        ]
    finally:
        con.close()
    if figures[0] != figures[1]:
        logger.warning("exports differ", extra={"floor": str(figures[0]), "ours": str(figures[1])})
    return figures[0] == figures[1]


# --------------------------------------------------------------------------------------------
# Data


def generate(root: Path, n_decisions: int, n_rewards: int, seed: int) -> None:
    """Closed segments as the service writes them: 2 writers, 60 s segments, ~100 decisions/s.

    Contexts have two shared namespaces (user, session) and 5 actions with item features.
    Rewards go to a random 30% of decisions, 1-300 s after them (a few before: clocks
    differ), so some windows hold them and a few late ones fall outside. Reused when a
    previous run generated the same sizes.
    """
    stamp = root / "generated.json"
    wanted = {"decisions": n_decisions, "rewards": n_rewards, "seed": seed, "version": 2}
    if stamp.exists() and orjson.loads(stamp.read_bytes()) == wanted:
        logger.info("bench data reused", extra={"root": str(root)})
        return
    shutil.rmtree(root, ignore_errors=True)
    started = time.perf_counter()
    rng = random.Random(seed)
    moments = [_EPOCH + timedelta(seconds=i / RATE) for i in range(n_decisions)]
    rewarded = sorted(rng.sample(range(n_decisions), n_rewards))
    with _SegmentFiles(root, "decisions") as out:
        for i, moment in enumerate(moments):
            out.write(i % WRITERS, moment, _decision(rng, i, moment))
    reward_lines = []
    for i in rewarded:
        delay = rng.uniform(-5.0, 300.0) if rng.random() < 0.98 else rng.uniform(600, 1200)
        moment = moments[i] + timedelta(seconds=delay)
        value = 1.0 if rng.random() < 0.3 else 0.0
        reward_lines.append((moment, i, value))
    reward_lines.sort()
    with _SegmentFiles(root, "outcomes") as out:
        for moment, i, value in reward_lines:
            line = outcome_line(
                event_id=f"bench-{i:08d}", ts=format_ts(moment), kind="reward", value=value
            )
            out.write(i % WRITERS, moment, line)
    stamp.write_bytes(orjson.dumps(wanted))
    logger.info(
        "bench data generated",
        extra={"seconds": round(time.perf_counter() - started, 1), "root": str(root)},
    )


_ACTIONS: list[tuple[str, Namespaces]] = [
    (
        f"article-{k}",
        {
            "item": {
                "category": _CATEGORIES[k % len(_CATEGORIES)],
                "price": round(4.99 + 3.5 * k, 2),
                "fresh": k % 2 == 0,
                "length": 120 + 45 * k,
            }
        },
    )
    for k in range(ACTIONS)
]
_ACTION_IDS = [action_id for action_id, _ in _ACTIONS]


def _decision(rng: random.Random, i: int, moment: datetime) -> bytes:
    chosen = rng.randrange(ACTIONS)
    greedy = rng.random() < 0.8
    probabilities = [0.05] * ACTIONS
    probabilities[chosen if greedy else (chosen + 1) % ACTIONS] = 0.8
    order = [chosen, *(k for k in range(ACTIONS) if k != chosen)]
    context: Namespaces = {
        "user": {
            "age": rng.randint(18, 80),
            "city": rng.choice(_CITIES),
            "device": rng.choice(_DEVICES),
            "premium": rng.random() < 0.2,
            "visits": rng.randint(0, 200),
        },
        "session": {
            "hour": moment.hour,
            "weekday": moment.strftime("%a"),
            "referrer": rng.choice(_REFERRERS),
        },
    }
    model = f"m-bench-{moment.hour // 2}"
    return decision_line(
        event_id=f"bench-{i:08d}",
        ts=format_ts(moment),
        order=order,
        probabilities=probabilities,
        c_json=encode_context(build_vw_context(context, _ACTIONS)),
        experiment="default",
        model_id=model,
        action_ids=_ACTION_IDS,
        sample_prob=rng.random(),
        deferred=False,
    )


class _SegmentFiles:
    """Writes closed segments in the event-log layout, one open file per writer."""

    def __init__(self, root: Path, kind: Kind) -> None:
        self.root = root
        self.kind = kind
        self.open: dict[int, tuple[float, int, Any]] = {}
        self.seq: dict[int, int] = {}

    def __enter__(self) -> _SegmentFiles:
        return self

    def write(self, writer: int, moment: datetime, line: bytes) -> None:
        now = moment.timestamp()
        current = self.open.get(writer)
        if current is not None and now - current[0] >= SEGMENT_SECONDS:
            current[2].close()
            current = None
        if current is None:
            seq = self.seq.get(writer, 0) + 1
            self.seq[writer] = seq
            path = self.root / segment_key(self.kind, now, f"bench{writer}-1-1", seq)
            path.parent.mkdir(parents=True, exist_ok=True)
            current = (now, seq, path.open("wb"))
            self.open[writer] = current
        current[2].write(line)

    def __exit__(self, *exc: object) -> None:
        for _, _, fh in self.open.values():
            fh.close()
