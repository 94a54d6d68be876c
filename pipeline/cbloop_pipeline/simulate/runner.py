"""The closed loop: a world's contexts through the real service, the pipeline between rounds.

One run:
  1. a fresh simulated deployment (config.yaml, event store, warehouse) under OUT/state;
  2. the warm start: N uniform-policy events, trained into the first model and deployed;
  3. the baselines on the loops' stream (they need no service);
  4. `cbloop serve` started on a free loopback port (or a running service at --url);
  5. each loop: rank + reward for `per_loop` contexts over HTTP, then one pipeline cycle
     (ingest, join, train, evaluate, deploy), then wait until the service serves the newly
     deployed model, so every loop is served by the model the pipeline chose before it;
  6. the output files.

The whole run holds the learning loop's lock, so a `cbloop loop` on the same deployment
cannot interleave its cycles with ours.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from cbloop.clock import compact_ts, format_ts
from cbloop.errors import ConfigError
from cbloop.registry import ModelRegistry
from cbloop.settings import ExperimentSettings, Settings, load_settings
from cbloop.storage import open_store
from cbloop_pipeline.simulate import report
from cbloop_pipeline.simulate.baselines import (
    ExpectedBaselines,
    OnlineResult,
    expected_baselines,
    online_vw,
)
from cbloop_pipeline.simulate.cycle import CycleReport, InProcessPipeline
from cbloop_pipeline.simulate.ope import latest_estimate
from cbloop_pipeline.simulate.results import Interaction, LoopRecord, totals
from cbloop_pipeline.simulate.service import (
    Decision,
    RankRequest,
    ServiceClient,
    ServiceProcess,
)
from cbloop_pipeline.simulate.state import (
    fresh_state_dir,
    simulation_config,
    wait_segments_closed,
    write_config,
)
from cbloop_pipeline.simulate.worlds import SyntheticWorld, TableWorld, World

logger = logging.getLogger(__name__)

WorldKind = Literal["table", "synthetic"]
LAST_LOOPS = 5
#: Rewards are sent right after each rank, so a short window holds all of them, and the
#: cycle after a round only has to wait this long for the round's last windows to close.
REWARD_WAIT_SECONDS = 1.0
#: A round adds 20% of its events to the eval split (about 60 for a round of 300); the default
#: of 100 would keep the first candidates of short rounds from being judged at all.
PROMOTION_MIN_EVENTS = 50
#: As the reference workflow did, each round's candidate is judged on the newest round's eval
#: split: its interval then speaks of the traffic the next round will see, and stays wide
#: enough to be compared with one round's realized mean (all rounds' eval data together give
#: an interval of the long-run value far narrower than a round's own sampling noise).
EVAL_RECENT_JOINS = 1


class SimulationError(ConfigError):
    """The simulation could not run; the message says which step failed."""


@dataclass(frozen=True)
class SimulationOptions:
    out: Path
    world: WorldKind = "synthetic"
    data: Path | None = None
    label_col: str | int | None = None
    warm_start: int = 100
    loops: int = 6
    per_loop: int = 500
    seed: int = 0
    url: str | None = None
    config: Path | None = None
    experiment: str = "default"
    workers: int = 1
    concurrency: int = 8
    api_key: str | None = None
    swap_timeout: float = 60.0
    service_log_level: str = "WARNING"
    #: How to run `cbloop serve` (see ServiceProcess); None: the installed console script.
    serve_command: tuple[str, ...] | None = None
    #: Also write a static copy of the run's dashboard (pages, JSON, assets) here.
    dashboard_snapshot: Path | None = None

    def __post_init__(self) -> None:
        if self.loops < 1 or self.per_loop < 1:
            raise SimulationError("--loops and --per-loop must be at least 1")
        if self.warm_start < 0:
            raise SimulationError("--warm-start must not be negative")
        if self.world == "table" and self.data is None:
            raise SimulationError("the table world needs --data PATH")
        if self.url is not None and self.config is None:
            raise SimulationError(
                "--url needs --config: the settings of that service, so the pipeline reads "
                "its event store and writes its registry"
            )


@dataclass
class SimulationResult:
    summary: dict[str, Any]
    loops: list[LoopRecord]
    interactions: list[Interaction]
    files: dict[str, Path] = field(default_factory=dict)


Progress = Callable[[str], None]
LoopDone = Callable[[LoopRecord], None]


def build_world(options: SimulationOptions) -> World:
    length = options.warm_start + options.loops * options.per_loop
    if options.world == "table":
        assert options.data is not None  # checked in SimulationOptions
        return TableWorld.from_file(
            options.data, label_col=options.label_col, seed=options.seed, length=length
        )
    return SyntheticWorld(seed=options.seed, length=length)


def experiment_settings(world: World) -> dict[str, Any]:
    """The world's recommended experiment, with a reward window that fits a simulation."""
    config = dict(world.experiment_config())
    reward = dict(config.get("reward", {}))
    reward.setdefault("wait_seconds", REWARD_WAIT_SECONDS)
    config["reward"] = reward
    promotion = dict(config.get("promotion", {}))
    promotion.setdefault("min_events", PROMOTION_MIN_EVENTS)
    config["promotion"] = promotion
    evaluation = dict(config.get("evaluation", {}))
    evaluation.setdefault("recent_joins", EVAL_RECENT_JOINS)
    config["evaluation"] = evaluation
    return config


def run_simulation(
    options: SimulationOptions,
    *,
    progress: Progress | None = None,
    loop_done: LoopDone | None = None,
) -> SimulationResult:
    """Run the whole closed loop and write the outputs to `options.out`."""
    say = progress or (lambda message: logger.info("%s", message))
    started = time.perf_counter()
    started_at = format_ts()
    options.out.mkdir(parents=True, exist_ok=True)
    world = build_world(options)
    settings, config_path = _deployment(options, world)
    work = options.out / "state"
    work.mkdir(exist_ok=True)
    run = _Run(options, world, settings, work, say)
    with run.pipeline.locked():
        run.prepare()
        run.compute_baselines()
        service = None
        if options.url is None:
            service = ServiceProcess(
                config_path,
                work / "service.log",
                workers=options.workers,
                serve_command=options.serve_command,
            )
            with _Stopwatch(run.timings, "service_start"):
                service.start()
            say(f"cbloop serve running at {service.url} (log: {service.log_path})")
        try:
            url = service.url if service is not None else str(options.url)
            with ServiceClient(
                url, options.experiment, api_key=options.api_key, concurrency=options.concurrency
            ) as client:
                run.play_loops(client, loop_done)
        finally:
            if service is not None:
                service.stop()

    wall = time.perf_counter() - started
    summary = _summary(
        options,
        world,
        experiment=run.experiment,
        settings=settings,
        loops=run.loops,
        interactions=run.interactions,
        best_action=run.expected.best_action,
        started_at=started_at,
        wall=wall,
        timings=run.timings,
    )
    result = SimulationResult(summary, run.loops, run.interactions)
    result.files = _write_outputs(options.out, result, world)
    if options.dashboard_snapshot is not None:
        # Only runs that ask for a static dashboard pay for importing its renderer.
        from cbloop_pipeline.dashboard.export import write_run_dashboard  # noqa: PLC0415

        result.files["dashboard"] = write_run_dashboard(settings, options.dashboard_snapshot)
    say(f"wrote {', '.join(str(p) for p in result.files.values())}")
    return result


class _Run:
    """The state of one simulation run between its steps."""

    def __init__(
        self,
        options: SimulationOptions,
        world: World,
        settings: Settings,
        work: Path,
        say: Progress,
    ) -> None:
        self.options = options
        self.world = world
        self.settings = settings
        self.work = work
        self.say = say
        self.experiment = settings.experiment(options.experiment)
        self.vw_args = self.experiment.vw_arguments()
        self.pipeline = InProcessPipeline(settings, options.experiment, work_dir=work)
        self.registry = ModelRegistry(open_store(settings.storage))
        self.timings: dict[str, float] = {}
        self.loops: list[LoopRecord] = []
        self.interactions: list[Interaction] = []
        self.warm_lines = world.warm_start_lines(options.warm_start, options.experiment)
        self.first_model = ""
        tag = _run_tag(options)
        self.loop_ts = [
            list(range(start, start + options.per_loop))
            for start in range(options.warm_start, len(world), options.per_loop)
        ]
        self.all_ts = [t for ts in self.loop_ts for t in ts]
        self.event_ids = {t: f"{tag}-{t:06d}" for t in self.all_ts}
        self.expected: ExpectedBaselines
        self.online: OnlineResult

    def prepare(self) -> None:
        """Warehouse schema, then the first model: warm-started, or the experiment's own."""
        with _Stopwatch(self.timings, "prepare"):
            self.pipeline.prepare()
        self.say(
            f"world: {self.world.name} ({len(self.world.actions)} actions); VW: {self.vw_args}"
        )
        with _Stopwatch(self.timings, "warm_start"):
            if self.warm_lines:
                path = self.work / "warm-start.dsjson"
                path.write_text("\n".join(self.warm_lines) + "\n", encoding="utf-8")
                self.first_model = self.pipeline.warm_start(path)
                self.say(
                    f"warm start: {len(self.warm_lines)} uniform-policy events -> "
                    f"model {self.first_model}"
                )
            else:
                self.first_model = self.pipeline.ensure_model()

    def compute_baselines(self) -> None:
        with _Stopwatch(self.timings, "baselines"):
            self.expected = expected_baselines(self.world, self.all_ts)
            self.online = online_vw(
                self.world,
                self.vw_args,
                experiment=self.options.experiment,
                warm_start=self.warm_lines,
                ts=self.all_ts,
                event_ids=[self.event_ids[t] for t in self.all_ts],
            )

    def play_loops(self, client: ServiceClient, loop_done: LoopDone | None) -> None:
        swap_timeout = self.options.swap_timeout
        confirmations = 2 * self.options.workers + 1

        def wait_for(model_id: str) -> None:
            client.wait_for_model(model_id, swap_timeout, confirmations=confirmations)

        with _Stopwatch(self.timings, "swap"):
            wait_for(self.first_model)
        serving = self.first_model
        for number, ts in enumerate(self.loop_ts, start=1):
            loop_started_at = format_ts()
            with _Stopwatch(self.timings, "play") as play:
                answers = _play(client, self.world, ts, self.event_ids)
            rewards_sent = time.monotonic()
            offset = len(self.interactions)
            rows = [
                self._interaction(number, t, decision, value, offset + i)
                for i, (t, (decision, value)) in enumerate(zip(ts, answers, strict=True))
            ]
            self.interactions.extend(rows)

            with _Stopwatch(self.timings, "pipeline") as cycle_watch:
                self._wait_for_round_data(rewards_sent)
                cycle = self.pipeline.cycle()
            deployed = cycle.deployed_model_id or serving
            with _Stopwatch(self.timings, "swap") as swap:
                # After the last round nothing is served any more, so no need to wait.
                if number < len(self.loop_ts) and deployed != serving:
                    wait_for(deployed)

            record = _loop_record(
                number,
                rows,
                serving,
                registry=self.registry,
                experiment=self.options.experiment,
                before=loop_started_at,
                cycle=cycle,
            )
            record.play_seconds = round(play.elapsed, 3)
            record.pipeline_seconds = round(cycle_watch.elapsed, 3)
            record.swap_seconds = round(swap.elapsed, 3)
            self.loops.append(record)
            if loop_done is not None:
                loop_done(record)
            serving = deployed

    def _wait_for_round_data(self, rewards_sent: float) -> None:
        """Until the join will see the whole round: segments closed, reward windows over."""
        window_closes = rewards_sent + self.experiment.reward.wait_seconds + 0.05
        # Writers close a segment within about its age limit; allow a generous margin.
        age_limit = self.settings.eventlog.segment_max_seconds
        wait_segments_closed(self.settings.storage.root, timeout=2 * age_limit + 30.0)
        remaining = window_closes - time.monotonic()
        if remaining > 0:
            time.sleep(remaining)

    def _interaction(
        self, loop: int, t: int, decision: Decision, value: float, i: int
    ) -> Interaction:
        rewards = self.world.expected_rewards(t)
        chosen = self.world.action_ids.index(decision.action_id)
        return Interaction(
            loop=loop,
            t=t,
            event_id=decision.event_id,
            model_id=decision.model_id,
            action_id=decision.action_id,
            probability=decision.probability,
            reward=value,
            expected_reward=float(rewards[chosen]),
            oracle_reward=float(self.expected.oracle[i]),
            uniform_reward=float(self.expected.uniform[i]),
            best_fixed_reward=float(self.expected.best_fixed[i]),
            online_action_id=self.online.actions[i],
            online_probability=float(self.online.probabilities[i]),
            online_reward=float(self.online.rewards[i]),
        )


# --------------------------------------------------------------------------------------------


class _Stopwatch:
    """Adds the block's duration to `timings[name]`; `elapsed` is this block's own."""

    def __init__(self, timings: dict[str, float], name: str) -> None:
        self.timings = timings
        self.name = name
        self.started = 0.0
        self.elapsed = 0.0

    def __enter__(self) -> _Stopwatch:
        self.started = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.elapsed = time.perf_counter() - self.started
        self.timings[self.name] = self.timings.get(self.name, 0.0) + self.elapsed


def _run_tag(options: SimulationOptions) -> str:
    # A fresh deployment has no earlier events, so ids can be reproducible. A running service
    # may have logged an earlier run's ids, which the join would treat as duplicates.
    if options.url is None:
        return f"sim{options.seed}"
    return f"sim{options.seed}-{compact_ts()}"


def _deployment(options: SimulationOptions, world: World) -> tuple[Settings, Path]:
    """Settings of the deployment under test, generated unless --url names a running one."""
    if options.url is not None:
        assert options.config is not None  # checked in SimulationOptions
        return load_settings(options.config), options.config
    state = fresh_state_dir(options.out / "state")
    config = simulation_config(
        state,
        options.experiment,
        experiment_settings(world),
        log_level=options.service_log_level,
    )
    path, settings = write_config(state, config)
    return settings, path


def _play(
    client: ServiceClient, world: World, ts: list[int], event_ids: dict[int, str]
) -> list[tuple[Decision, float]]:
    index = {action_id: i for i, action_id in enumerate(world.action_ids)}
    positions = {event_ids[t]: t for t in ts}
    actions = world.action_payloads()

    def reward_of(request: RankRequest, decision: Decision) -> float:
        try:
            chosen = index[decision.action_id]
        except KeyError:
            raise SimulationError(
                f"the service chose {decision.action_id!r}, which is not an action of the world"
            ) from None
        return world.reward(positions[request.event_id], chosen)

    requests = [
        RankRequest(event_id=event_ids[t], context=world.context(t), actions=actions) for t in ts
    ]
    return client.play(requests, reward_of)


def _loop_record(
    number: int,
    rows: list[Interaction],
    serving: str,
    *,
    registry: ModelRegistry,
    experiment: str,
    before: str,
    cycle: CycleReport,
) -> LoopRecord:
    def mean(values: list[float]) -> float:
        return float(np.mean(values))

    served = {r.model_id for r in rows}
    rewards = [r.reward for r in rows]
    mean_reward = mean(rewards)
    estimate = latest_estimate(registry.list_models(experiment), serving, before=before)
    band = (
        estimate.prediction_interval(float(np.std(rewards, ddof=1)), len(rewards))
        if estimate is not None and len(rewards) > 1
        else None
    )
    return LoopRecord(
        loop=number,
        interactions=len(rows),
        model_id=serving,
        mean_reward=mean_reward,
        online_vw=mean([r.online_reward for r in rows]),
        uniform=mean([r.uniform_reward for r in rows]),
        best_fixed=mean([r.best_fixed_reward for r in rows]),
        oracle=mean([r.oracle_reward for r in rows]),
        ope=estimate,
        covered=estimate.covers(mean_reward) if estimate is not None else None,
        prediction_interval=band,
        consistent=band[0] <= mean_reward <= band[1] if band is not None else None,
        deployed_after=cycle.deployed_model_id,
        pipeline=cycle.details,
        # Should stay empty: the loop waits for the swap. Non-empty means a worker lagged.
        other_models=sorted(served - {serving}),
    )


def _summary(
    options: SimulationOptions,
    world: World,
    *,
    experiment: ExperimentSettings,
    settings: Settings,
    loops: list[LoopRecord],
    interactions: list[Interaction],
    best_action: str,
    started_at: str,
    wall: float,
    timings: dict[str, float],
) -> dict[str, Any]:
    total = totals(loops, interactions, best_action, last=LAST_LOOPS)
    return {
        "world": world.describe(),
        "experiment": {
            "name": options.experiment,
            "vw_arguments": experiment.vw_arguments(),
            "settings": experiment.model_dump(mode="json"),
        },
        "options": {
            "data": str(options.data) if options.data else None,
            "warm_start": options.warm_start,
            "loops": options.loops,
            "per_loop": options.per_loop,
            "seed": options.seed,
            "url": options.url,
            "workers": options.workers,
            "concurrency": options.concurrency,
        },
        "storage_root": str(settings.storage.root),
        "started_at": started_at,
        "loops": [r.to_json() for r in loops],
        "totals": total.__dict__,
        "wall_seconds": round(wall, 3),
        "timings": {k: round(v, 3) for k, v in timings.items()},
    }


def _write_outputs(out: Path, result: SimulationResult, world: World) -> dict[str, Path]:
    title = f"{world.name}: {result.summary['options']['loops']} loops of " + str(
        result.summary["options"]["per_loop"]
    )
    return {
        "summary": report.write_summary(out, result.summary),
        "markdown": report.write_markdown(out, result.loops, result.summary),
        "interactions": report.write_interactions(out, result.interactions),
        "reward_plot": report.plot_reward_per_loop(out, result.loops, title),
        "ope_plot": report.plot_ope_vs_realized(out, result.loops, title),
    }
