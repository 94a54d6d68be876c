"""`cbloop bench --only dashboard`: page latency for an experiment with 1M decisions.

The join bench's generator writes 1M decisions and 300k rewards as closed segments; the real
`cbloop ingest` and `cbloop join` load them; the loop's snapshot publisher (timed too, it runs
after every cycle) copies the warehouse and adds the summary tables. Then the dashboard is
served by uvicorn on loopback and every page and chart's JSON is fetched over HTTP, best and
median of several rounds. The same-run baseline is what a page would cost without the
summary tables: the per-model report view (migration 0007) queried on the warehouse itself.
The target: every page under 300 ms.
"""

from __future__ import annotations

import socket
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import duckdb
import httpx
import typer
import uvicorn

from cbloop_cli.benchmarks import join as join_bench

TARGET_MS = 300.0
ROUNDS = 7


def run(out_dir: Path, quick: bool = False) -> dict[str, Any]:
    n_decisions, n_rewards = (50_000, 15_000) if quick else (1_000_000, 300_000)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = out_dir / "storage"
    typer.echo(f"generating {n_decisions:,} decisions and {n_rewards:,} rewards ...")
    join_bench.generate(data, n_decisions, n_rewards, seed=7)
    settings = join_bench._settings(out_dir, data)
    typer.echo("ingest + join ...")
    join_bench._ours(settings)

    from cbloop_pipeline.dashboard.app import create_app
    from cbloop_pipeline.dashboard.snapshot import publish

    start = time.perf_counter()
    snapshot = publish(settings)
    publish_s = time.perf_counter() - start

    baseline_ms = _best_ms(lambda: _report_query(settings.warehouse.path))

    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings, snapshot=snapshot),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            access_log=False,
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    pages = ["/", "/experiments/default", "/api/overview", "/api/experiments/default"] + [
        f"/api/experiments/default/charts/{c}"
        for c in ("traffic", "reward_over_time", "reward_by_model", "delay")
    ]
    timings: dict[str, dict[str, float]] = {}
    try:
        with httpx.Client(timeout=60) as client:
            _wait_up(client, base)
            for path in pages:
                samples = []
                for _ in range(ROUNDS):
                    t0 = time.perf_counter()
                    response = client.get(base + path)
                    samples.append((time.perf_counter() - t0) * 1000)
                    response.raise_for_status()
                timings[path] = {
                    "best_ms": round(min(samples), 1),
                    "median_ms": round(statistics.median(samples), 1),
                    "max_ms": round(max(samples), 1),
                }
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    slowest = max(t["median_ms"] for t in timings.values())
    result = {
        "decisions": n_decisions,
        "rewards": n_rewards,
        "publish_seconds": round(publish_s, 3),
        "snapshot_bytes": snapshot.stat().st_size,
        "report_view_query_ms": round(baseline_ms, 1),
        "pages": timings,
        "slowest_median_ms": slowest,
        "ratio_slowest_page_to_report_query": round(slowest / baseline_ms, 3),
        "target_ms": TARGET_MS,
        "meets_target": slowest < TARGET_MS,
    }
    lines = [f"dashboard bench: {n_decisions:,} decisions, {n_rewards:,} rewards"]
    lines += [f"  snapshot publish (after each cycle)   {publish_s:7.2f} s"]
    lines += [
        f"  {path:<44s}{t['median_ms']:7.1f} ms median  ({t['best_ms']:.1f} best)"
        for path, t in timings.items()
    ]
    lines += [
        f"  baseline: report_by_model on the warehouse {baseline_ms:7.1f} ms",
        f"  slowest page / baseline query          {slowest / baseline_ms:7.2f}",
        f"  slowest page median {slowest:.1f} ms (target < {TARGET_MS:.0f} ms): "
        f"{'yes' if slowest < TARGET_MS else 'NO'}",
    ]
    typer.echo("\n".join(lines))
    return result


def _report_query(warehouse: Path) -> None:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        con.execute("SELECT * FROM report_by_model WHERE experiment = 'default'").fetchall()


def _best_ms(step: Any) -> float:
    samples = []
    for _ in range(3):
        t0 = time.perf_counter()
        step()
        samples.append((time.perf_counter() - t0) * 1000)
    return min(samples)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_up(client: httpx.Client, base: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            if client.get(base + "/healthz").status_code == 200:
                return
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
