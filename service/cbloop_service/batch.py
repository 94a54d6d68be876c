"""Batch decisions: a whole file of rank requests decided by the served policy, off HTTP.

Each line goes through exactly what `POST /v1/rank` runs (`parse_body`, `check_limits`,
`rank`), so the same request gets the same answer and the same logged decision line either
way. The work is spread over worker processes, each with its own VW workspace and its own
decision segment writer (the event log's one-writer-per-process rule); the parent reads the
input, hands out chunks and writes the answers back in input order.
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing as mp
import queue
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson
from fastapi.exceptions import RequestValidationError

from cbloop.errors import CbloopError, ConfigError, InvalidInput
from cbloop.eventlog import SegmentWriter
from cbloop.eventlog.shipper import make_shipper
from cbloop.registry import ModelRegistry
from cbloop.settings import Settings
from cbloop.storage import open_store
from cbloop_service.batch_input import input_lines
from cbloop_service.errors import ServiceError, validation_detail
from cbloop_service.policy import LoadedModel, ModelLoader, ModelRefused, PolicyHolder
from cbloop_service.ranking import check_limits, rank
from cbloop_service.schemas import RankRequest, parse_body

logger = logging.getLogger(__name__)

CHUNK_LINES = 2000
_SENTINEL = None


class BatchError(CbloopError):
    """The batch cannot run at all (unknown experiment, model refused, unreadable input)."""


@dataclass(frozen=True)
class BatchOptions:
    experiment: str
    model_id: str | None = None  #: None: the experiment's current model
    log: bool = True  #: False scores only (what-if), nothing reaches the event log
    workers: int = 2


@dataclass
class BadLine:
    line: int
    message: str


#: Bad lines kept with their messages in the summary; the rest are only counted.
BAD_LINES_KEPT = 1000


@dataclass
class BatchSummary:
    decided: int = 0
    bad_count: int = 0
    bad: list[BadLine] = field(default_factory=list)  #: the first BAD_LINES_KEPT of them
    model_id: str = ""
    logged: bool = True

    def add_bad(self, line: int, message: str) -> None:
        self.bad_count += 1
        if len(self.bad) < BAD_LINES_KEPT:
            self.bad.append(BadLine(line, message))


def event_id_prefix(path: Path) -> str:
    """A stable prefix for the event ids of lines that carry none: the file's content digest.

    The same file decided again gets the same ids, hence the same choices (and the join
    de-duplicates the repeated decisions); any other file gets other ids.
    """
    digest = hashlib.sha256()
    try:
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except OSError as exc:
        raise BatchError(f"cannot read {path}: {exc.strerror}") from exc
    return f"batch-{digest.hexdigest()[:20]}"


class LineDecider:
    """One process's decider: the served model, a policy holder and its decision writer."""

    def __init__(self, settings: Settings, options: BatchOptions, scratch: Path) -> None:
        experiment = settings.experiments.get(options.experiment)
        if experiment is None:
            raise ConfigError(
                f"experiment {options.experiment!r} is not configured",
                hint=f"configured: {', '.join(sorted(settings.experiments))}",
            )
        self.settings = settings
        self.options = options
        registry = ModelRegistry(open_store(settings.storage))
        model_id = options.model_id
        if model_id is None:
            pointer = registry.current(options.experiment)
            if pointer is None:
                raise BatchError(
                    f"experiment {options.experiment!r} has no model yet",
                    hint="run `cbloop serve` or `cbloop train` once first",
                )
            model_id = pointer.model_id
        try:
            model: LoadedModel = ModelLoader(registry, scratch).load(
                options.experiment, experiment, model_id
            )
        except ModelRefused as exc:
            raise BatchError(str(exc)) from exc
        self.holder = PolicyHolder(options.experiment, experiment, model)
        self.holder.pointer_model_id = model_id
        # Under --no-log the lines go through the same writer into the scratch folder, which
        # is deleted afterwards: the what-if path is the logged path, minus the keeping.
        self._shipper = make_shipper(settings) if options.log else None
        self.writer = SegmentWriter(
            settings.storage.root if options.log else scratch / "discarded",
            "decisions",
            settings.eventlog,
            on_closed=self._shipper.submit if self._shipper is not None else None,
        )
        if self._shipper is not None:
            self._shipper.start()
        self.writer.start()

    @property
    def model_id(self) -> str:
        return self.holder.model.model_id

    def decide(self, raw: bytes, default_event_id: str) -> bytes:
        """The answer line for one request line; raises InvalidInput naming the problem."""
        try:
            request = parse_body(RankRequest, raw)
        except RequestValidationError as exc:
            raise InvalidInput(validation_detail(exc)) from None
        if "experiment" in request.model_fields_set and request.experiment != (
            self.options.experiment
        ):
            raise InvalidInput(
                f"experiment: {request.experiment!r} differs from the batch's "
                f"{self.options.experiment!r}"
            )
        if request.event_id is None:
            request = request.model_copy(update={"event_id": default_event_id})
        try:
            check_limits(request, self.settings.service)
            decision = rank(request, self.holder, self.writer)
        except ServiceError as exc:
            detail = f"{exc.field}: {exc.message}" if exc.field else exc.message
            raise InvalidInput(detail) from None
        return orjson.dumps(decision.answer())

    def close(self) -> None:
        self.writer.close()
        if self._shipper is not None:
            self._shipper.close()


# -- worker processes ---------------------------------------------------------------------
Chunk = tuple[int, int, list[bytes]]  # (chunk index, first line number, raw lines)
Result = tuple[int, list[tuple[int, bytes | None, str | None]]]


def _worker(
    *,
    settings: Settings,
    options: BatchOptions,
    prefix: str,
    tasks: mp.Queue[Chunk | None],
    results: mp.Queue[Any],
    scratch: str,
) -> None:
    try:
        Path(scratch).mkdir(parents=True, exist_ok=True)
        decider = LineDecider(settings, options, Path(scratch))
    except CbloopError as exc:
        results.put(("fatal", str(exc), exc.hint))
        return
    results.put(("ready", decider.model_id, ""))
    try:
        while (task := tasks.get()) is not _SENTINEL:
            index, first, lines = task
            answers: list[tuple[int, bytes | None, str | None]] = []
            for offset, raw in enumerate(lines):
                number = first + offset
                try:
                    answers.append((number, decider.decide(raw, f"{prefix}-{number}"), None))
                except InvalidInput as exc:
                    answers.append((number, None, str(exc)))
            results.put(("chunk", index, answers))
    finally:
        decider.close()
        results.put(("done", "", ""))


def _chunks(source: Iterable[bytes]) -> Iterator[Chunk]:
    index, number = 0, 1
    lines: list[bytes] = []
    first = 1
    for raw in source:
        stripped = raw.strip()
        if stripped:
            if not lines:
                first = number
            lines.append(stripped)
        else:
            # A blank line still has a number, so the numbers stay those of the file; it is
            # sent as an empty request and reported as a bad line.
            if not lines:
                first = number
            lines.append(b"")
        number += 1
        if len(lines) == CHUNK_LINES:
            yield index, first, lines
            index, lines = index + 1, []
    if lines:
        yield index, first, lines


def run_batch(
    settings: Settings,
    options: BatchOptions,
    source: Path,
    sink: IO[bytes],
    *,
    scratch: Path,
    on_progress: Callable[[int], None] = lambda n: None,
) -> BatchSummary:
    """Decide every line of `source`, writing one answer line per good input line, in order.

    Bad lines are skipped and listed in the summary with their numbers. Raises BatchError
    (or ConfigError) when nothing can be decided at all.
    """
    if options.workers < 1:
        raise ConfigError("--workers must be at least 1")
    prefix = event_id_prefix(source)
    context = mp.get_context("spawn")  # a VW workspace must never cross a fork
    tasks: mp.Queue[Chunk | None] = context.Queue(maxsize=options.workers * 2)
    results: mp.Queue[Any] = context.Queue()
    processes = [
        context.Process(
            target=_worker,
            kwargs={
                "settings": settings,
                "options": options,
                "prefix": prefix,
                "tasks": tasks,
                "results": results,
                "scratch": str(scratch / f"worker-{i}"),
            },
            name=f"cbloop-decide-{i}",
            daemon=True,
        )
        for i in range(options.workers)
    ]
    for process in processes:
        process.start()
    summary = BatchSummary(logged=options.log)
    try:
        _await_ready(processes, results, summary)
        _feed_and_collect(
            source=source,
            tasks=tasks,
            results=results,
            processes=processes,
            sink=sink,
            summary=summary,
            on_progress=on_progress,
        )
    finally:
        for process in processes:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
    return summary


def _await_ready(
    processes: Sequence[mp.process.BaseProcess], results: mp.Queue[Any], summary: BatchSummary
) -> None:
    for _ in processes:
        kind, value, hint = _get(results, processes)
        if kind == "fatal":
            for process in processes:
                process.kill()
            raise BatchError(value, hint=hint or None)
        summary.model_id = value


def _feed_and_collect(
    *,
    source: Path,
    tasks: mp.Queue[Chunk | None],
    results: mp.Queue[Any],
    processes: Sequence[mp.process.BaseProcess],
    sink: IO[bytes],
    summary: BatchSummary,
    on_progress: Callable[[int], None],
) -> None:
    pending: dict[int, list[tuple[int, bytes | None, str | None]]] = {}
    next_out = 0
    sent = 0
    in_flight = 0
    limit = len(processes) * 3

    done = 0

    def collect_one() -> None:
        nonlocal next_out, in_flight, done
        kind, index, answers = _get(results, processes)
        while kind == "done":  # a worker that found no more work has closed its segments
            done += 1
            if done == len(processes) and in_flight:
                raise BatchError(f"every decide worker stopped with {in_flight} chunks undone")
            kind, index, answers = _get(results, processes)
        if kind != "chunk":
            raise BatchError(f"unexpected message from a decide worker ({kind})")
        in_flight -= 1
        pending[index] = answers
        while next_out in pending:
            for number, answer, error in pending.pop(next_out):
                if answer is not None:
                    sink.write(answer + b"\n")
                    summary.decided += 1
                else:
                    summary.add_bad(number, error or "invalid")
                on_progress(1)
            next_out += 1

    try:
        for chunk in _chunks(input_lines(source)):
            while in_flight >= limit:
                collect_one()
            tasks.put(chunk)
            sent += 1
            in_flight += 1
    except OSError as exc:
        raise BatchError(f"cannot read {source}: {exc.strerror}") from exc
    finally:
        for _ in processes:
            tasks.put(_SENTINEL)
    while next_out < sent:
        collect_one()
    while done < len(processes):  # each worker closes its segments before it says done
        kind, _index, _answers = _get(results, processes)
        if kind != "done":
            raise BatchError(f"unexpected message from a decide worker ({kind})")
        done += 1


def _get(results: mp.Queue[Any], processes: Sequence[mp.process.BaseProcess]) -> Any:
    """The next worker message; a worker that died (VW crash, OOM kill) is an error, not a hang."""
    while True:
        try:
            return results.get(timeout=1.0)
        except queue.Empty:
            dead = [p for p in processes if p.exitcode not in (None, 0)]
            if dead:
                raise BatchError(
                    f"decide worker {dead[0].name} died with exit code {dead[0].exitcode}"
                ) from None
