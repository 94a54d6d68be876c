"""The reward join's rules, each on crafted segments with labels worked out by hand.

Unless a test says otherwise: wait 600 s, backward 60 s, default reward 0.0, aggregation
earliest, train ratio 0.8; decisions have sample_prob 0.1 (train) and p_chosen 0.8.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from crafted_segments import (
    EventLogFolder,
    Pipeline,
    PipelineFactory,
    activate,
    at,
    decision,
    reward,
)

from cbloop.settings import Settings
from cbloop.storage import LocalStore
from cbloop_pipeline.ingest import ingest
from cbloop_pipeline.join import run_join


def test_rewards_count_only_inside_the_window_from_backward_before_to_wait_after(
    wh: Pipeline, event_log: EventLogFolder
) -> None:
    event_log.decisions(decision("e1", 1000), decision("e2", 1000), decision("e3", 1000))
    event_log.outcomes(
        reward("e1", 1000 - 61, 5.0),  # 61 s before: outside (backward is 60)
        reward("e1", 1000 + 601, 7.0),  # 601 s after: outside (wait is 600)
        reward("e2", 1000 - 60, 0.25),  # exactly at the window's start: inside
        reward("e3", 1000 + 600, 0.5),  # exactly at the window's end: inside
    )
    wh.ingest()
    job = wh.join(as_of=at(5000))

    # e1 had no reward inside its window: default 0.0 (cost 0.0), counted as defaulted.
    assert wh.labels(job) == {"e1": (0.0, "train"), "e2": (-0.25, "train"), "e3": (-0.5, "train")}
    assert (job.joined, job.rewarded, job.defaulted) == (3, 2, 1)
    assert (job.early_rewards, job.late_rewards, job.rewards_used) == (1, 1, 2)
    reasons = wh.query("SELECT event_id, value, reason FROM unused_rewards ORDER BY value")
    assert reasons == [("e1", 5.0, "before_window"), ("e1", 7.0, "after_window")]


@pytest.mark.parametrize(
    ("aggregation", "expected_reward"),
    [
        ("earliest", 1.0),  # the one at +5 s
        ("latest", 0.4),  # the one at +20 s
        ("sum", 1.6),  # 0.2 + 1.0 + 0.4
        ("mean", 1.6 / 3),
        ("min", 0.2),
        ("max", 1.0),
    ],
)
def test_several_rewards_for_one_event_are_aggregated_as_configured(
    make_pipeline: PipelineFactory, aggregation: str, expected_reward: float
) -> None:
    wh = make_pipeline(aggregation=aggregation)
    log = EventLogFolder(wh.settings.storage.root)
    log.decisions(decision("e1", 0))
    log.outcomes(reward("e1", 10, 0.2), reward("e1", 5, 1.0))
    log.outcomes(reward("e1", 20, 0.4), reward("e1", 700, 9.0))  # the last is after the window
    wh.ingest()
    job = wh.join(as_of=at(3600))

    [line] = wh.exported(job.train_key)
    assert line["_label_cost"] == pytest.approx(-expected_reward)
    assert job.rewards_used == 3
    assert job.late_rewards == 1


def test_an_event_without_reward_gets_the_default_and_counts_as_defaulted(
    make_pipeline: PipelineFactory,
) -> None:
    wh = make_pipeline(default=0.25)
    log = EventLogFolder(wh.settings.storage.root)
    log.decisions(decision("rewarded", 0), decision("silent", 0))
    log.outcomes(reward("rewarded", 30, 1.0))
    wh.ingest()
    job = wh.join(as_of=at(3600))

    assert wh.labels(job) == {"rewarded": (-1.0, "train"), "silent": (-0.25, "train")}
    assert (job.joined, job.rewarded, job.defaulted, job.skipped) == (2, 1, 1, 0)


def test_with_a_null_default_events_without_reward_are_skipped(
    make_pipeline: PipelineFactory,
) -> None:
    wh = make_pipeline(default=None)
    log = EventLogFolder(wh.settings.storage.root)
    log.decisions(decision("rewarded", 0), decision("silent", 0))
    log.outcomes(reward("rewarded", 30, 0.0))  # a zero reward is still a reward
    wh.ingest()
    job = wh.join(as_of=at(3600))

    assert wh.labels(job) == {"rewarded": (0.0, "train")}
    assert (job.joined, job.skipped, job.skipped_no_reward, job.defaulted) == (1, 1, 1, 0)
    assert wh.query("SELECT event_id, status FROM joined_events ORDER BY event_id") == [
        ("rewarded", "rewarded"),
        ("silent", "skipped_no_reward"),
    ]


def test_a_deferred_decision_is_learned_only_if_activated_inside_its_window(
    wh: Pipeline, event_log: EventLogFolder
) -> None:
    event_log.decisions(
        decision("never", 0, deferred=True),
        decision("activated", 0, deferred=True),
        decision("too-late", 0, deferred=True),
        decision("not-deferred", 0),
    )
    event_log.outcomes(
        reward("never", 10, 1.0),
        activate("activated", 20),
        reward("activated", 30, 1.0),
        activate("too-late", 700),
        reward("too-late", 40, 1.0),
    )
    wh.ingest()
    job = wh.join(as_of=at(3600))

    # Activated: learned with its reward; not-deferred: default. The other two: not learned.
    assert wh.labels(job) == {"activated": (-1.0, "train"), "not-deferred": (0.0, "train")}
    assert (job.joined, job.skipped_not_activated) == (2, 2)
    reasons = wh.query("SELECT event_id, reason FROM unused_rewards ORDER BY event_id")
    assert reasons == [("never", "not_activated"), ("too-late", "not_activated")]


def test_a_decision_logged_twice_counts_once(wh: Pipeline, event_log: EventLogFolder) -> None:
    first = decision("e1", 0, chosen=1)
    event_log.decisions(first, first)  # the same line twice in one segment
    event_log.decisions(decision("e1", 2, chosen=1))  # the client's retry, two seconds later
    event_log.outcomes(reward("e1", 30, 1.0))
    wh.ingest()
    job = wh.join(as_of=at(3600))

    [line] = wh.exported(job.train_key)
    assert line["EventId"] == "e1"
    assert line["Timestamp"].endswith("12:00:00.000000Z")  # the first one wins
    assert (job.joined, job.decision_rows, job.duplicate_decisions) == (1, 3, 2)


def test_a_retried_decision_arriving_after_the_join_is_not_exported_again(
    wh: Pipeline, event_log: EventLogFolder
) -> None:
    event_log.decisions(decision("e1", 0))
    wh.ingest()
    first = wh.join(as_of=at(3600))
    event_log.decisions(decision("e1", 5))  # a late segment holding the client's retry
    wh.ingest()
    second = wh.join(as_of=at(7200))

    assert len(wh.labels(first)) == 1
    assert wh.labels(second) == {}
    assert (second.decision_rows, second.duplicate_decisions, second.joined) == (1, 1, 0)


def test_the_same_outcome_delivered_twice_counts_once(make_pipeline: PipelineFactory) -> None:
    wh = make_pipeline(aggregation="sum")
    log = EventLogFolder(wh.settings.storage.root)
    log.decisions(decision("copied", 0), decision("retried", 0), decision("two", 0))
    line = reward("copied", 10, 1.0)
    log.outcomes(line)
    log.outcomes(line)  # the same line again, in another segment
    log.outcomes(
        reward("retried", 10, 1.0, key="k-1"),
        reward("retried", 12, 1.0, key="k-1"),  # retried request, same Idempotency-Key
        reward("two", 10, 1.0, key="k-2"),
        reward("two", 12, 1.0, key="k-3"),  # a different key: a second reward
    )
    wh.ingest()
    wh.ingest()  # ingesting again loads nothing twice either
    job = wh.join(as_of=at(3600))

    # With aggregation "sum", a counted duplicate would show as a cost of -2.
    assert wh.labels(job) == {
        "copied": (-1.0, "train"),
        "retried": (-1.0, "train"),
        "two": (-2.0, "train"),
    }
    assert (job.duplicate_rewards, job.rewards_used) == (2, 4)


def test_a_reward_arriving_after_its_event_was_joined_is_counted_late_and_not_learned(
    wh: Pipeline, event_log: EventLogFolder
) -> None:
    event_log.decisions(decision("e1", 0), decision("e2", 0))
    wh.ingest()
    first = wh.join(as_of=at(3600))
    # Inside e1's window, but its segment only closed after the join; e2's is past the window.
    event_log.outcomes(reward("e1", 30, 1.0), reward("e2", 4000, 1.0))
    wh.ingest()
    second = wh.join(as_of=at(7200))
    third = wh.join(as_of=at(9000))

    assert wh.labels(first) == {"e1": (0.0, "train"), "e2": (0.0, "train")}
    assert wh.labels(second) == {}
    assert (second.late_rewards, third.late_rewards) == (2, 0)  # counted once, not again
    reasons = wh.query("SELECT event_id, reason, job_seq FROM unused_rewards ORDER BY event_id")
    assert reasons == [("e1", "after_join", 2), ("e2", "after_window", 2)]


def test_a_decision_is_joined_only_once_its_window_has_closed(
    wh: Pipeline, event_log: EventLogFolder
) -> None:
    event_log.decisions(decision("early", 0), decision("late", 1000))
    event_log.outcomes(reward("late", 1500, 1.0))
    wh.ingest()
    first = wh.join(as_of=at(1000))  # early's window closed at 600; late's closes at 1600
    second = wh.join(as_of=at(1599))
    third = wh.join(as_of=at(1600))

    assert wh.labels(first) == {"early": (0.0, "train")}
    assert wh.labels(second) == {}
    assert wh.labels(third) == {"late": (-1.0, "train")}
    assert [j.decision_rows for j in (first, second, third)] == [1, 0, 1]


def test_a_decision_segment_ingested_late_is_still_joined_exactly_once(
    wh: Pipeline, event_log: EventLogFolder
) -> None:
    event_log.decisions(decision("on-time", 100))
    event_log.outcomes(reward("delayed", 130, 1.0))
    wh.ingest()
    first = wh.join(as_of=at(3600))
    event_log.decisions(decision("delayed", 100))  # its segment shows up after the join
    wh.ingest()
    second = wh.join(as_of=at(3700))
    third = wh.join(as_of=at(3800))

    assert wh.labels(first) == {"on-time": (0.0, "train")}
    assert wh.labels(second) == {"delayed": (-1.0, "train")}
    assert wh.labels(third) == {}


def test_rewards_whose_decision_never_came_are_counted_as_orphans_once(
    wh: Pipeline, event_log: EventLogFolder
) -> None:
    event_log.decisions(decision("e1", 0))
    event_log.outcomes(reward("ghost", 0, 1.0), reward("ghost", 0, 1.0), reward("e1", 10, 1.0))
    wh.ingest()
    # A decision may be logged up to `backward` after its reward and its segment may close
    # later still: orphans are only counted once as_of - wait - backward has passed them.
    early = wh.join(as_of=at(650))
    counted = wh.join(as_of=at(660))
    again = wh.join(as_of=at(7200))

    assert (early.orphan_rewards, counted.orphan_rewards, again.orphan_rewards) == (0, 1, 0)
    assert wh.query("SELECT event_id, experiment FROM unused_rewards WHERE reason = 'orphan'") == [
        ("ghost", None)
    ]


def test_events_split_by_sample_prob_at_the_train_ratio(make_pipeline: PipelineFactory) -> None:
    wh = make_pipeline(train_ratio=0.5)
    log = EventLogFolder(wh.settings.storage.root)
    log.decisions(
        decision("a", 0, sample_prob=0.0),
        decision("b", 0, sample_prob=0.4999),
        decision("c", 0, sample_prob=0.5),
        decision("d", 0, sample_prob=0.99),
    )
    wh.ingest()
    job = wh.join(as_of=at(3600))

    splits = {event: split for event, (_, split) in wh.labels(job).items()}
    assert splits == {"a": "train", "b": "train", "c": "eval", "d": "eval"}
    assert (job.train_events, job.eval_events) == (2, 2)


def test_the_export_is_the_decision_line_with_the_labels_first(
    wh: Pipeline, event_log: EventLogFolder
) -> None:
    context = {"user": {"city": 'Zürich "centre"', "age": 31.5, "vip": True}}
    line = decision("e1", 0, chosen=2, n_actions=4, p_chosen=0.7, context=context)
    event_log.decisions(line)
    event_log.outcomes(reward("e1", 1, 0.75))
    wh.ingest()
    job = wh.join(as_of=at(3600))

    [exported] = wh.lines(job.train_key)
    head = '{"_label_cost":-0.75,"_label_probability":0.7,"_label_Action":3,"_labelIndex":2,'
    assert exported == head + line[1:]  # the logged line, byte for byte, after the labels
    labels = list(orjson.loads(exported))[:4]
    assert labels == ["_label_cost", "_label_probability", "_label_Action", "_labelIndex"]
    assert wh.lines(job.eval_key) == []


def test_every_job_is_recorded_with_its_window_and_figures(
    wh: Pipeline, event_log: EventLogFolder
) -> None:
    event_log.decisions(decision("e1", 0), decision("e2", 0, sample_prob=0.9))
    event_log.outcomes(reward("e1", 10, 1.0), reward("ghost", 0, 1.0))
    wh.ingest()
    job = wh.join(as_of=at(3600))

    [row] = wh.query(
        "SELECT join_id, experiment, as_of, decision_ts_hi, wait_seconds, backward_seconds, "
        "aggregation, default_reward, train_ratio, joined, rewarded, defaulted, skipped, "
        "late_rewards, orphan_rewards, train_events, eval_events, train_key FROM join_jobs"
    )
    assert row == (
        job.join_id,
        "default",
        at(3600),
        at(3000),
        600.0,
        60.0,
        "earliest",
        0.0,
        0.8,
        2,
        1,
        1,
        0,
        0,
        1,
        1,
        1,
        f"joined/default/{job.join_id}/train.dsjson",
    )
    manifest = orjson.loads(
        (wh.settings.storage.root / f"joined/default/{job.join_id}/manifest.json").read_bytes()
    )
    assert manifest["joined"] == 2 and manifest["as_of"] == "2026-11-22T13:00:00Z"


def test_a_job_joins_only_its_own_experiment(make_pipeline: PipelineFactory) -> None:
    rules = {"reward": {"wait_seconds": 600, "backward_seconds": 60}}
    wh = make_pipeline(experiments={"default": rules, "other": rules})
    log = EventLogFolder(wh.settings.storage.root)
    log.decisions(decision("d1", 0), decision("o1", 0, experiment="other"))
    log.outcomes(reward("o1", 5, 1.0))
    wh.ingest()
    default_job = wh.join(as_of=at(3600))
    other_job = wh.join(as_of=at(3600), experiment="other")

    assert wh.labels(default_job) == {"d1": (0.0, "train")}
    assert wh.labels(other_job) == {"o1": (-1.0, "train")}
    assert default_job.orphan_rewards == other_job.orphan_rewards == 0


def test_every_reward_of_a_decided_event_is_either_learned_or_recorded_unused(
    make_pipeline: PipelineFactory,
) -> None:
    wh = make_pipeline(aggregation="sum")
    log = EventLogFolder(wh.settings.storage.root)
    log.decisions(*(decision(f"e{i}", i * 100) for i in range(10)))
    for batch in range(3):
        log.outcomes(*(reward(f"e{i}", i * 100 + batch * 400, 1.0) for i in range(10)))
        wh.ingest()
        wh.join(as_of=at(800 + batch * 900))
    wh.join(as_of=at(10_000))

    [(rewards, used, unused)] = wh.query(
        "SELECT (SELECT count(*) FROM outcomes), (SELECT sum(n_rewards) FROM joined_events), "
        "(SELECT count(*) FROM unused_rewards)"
    )
    assert rewards == 30
    assert used + unused == 30
    # Job 1 (as_of 800) decides e0-e2 with only their +0 rewards in; job 2 (as_of 1700)
    # decides e3-e9 with +0 and +400 in, and finds the +400 of e0-e2 late; the +800 rewards
    # are after every window. Used: 3 + 7 * 2 = 17; unused: 3 + 10 = 13.
    assert (used, unused) == (17, 13)


class _RemoteStore(LocalStore):
    """A store without local files, like S3: reads and writes go through get/put."""

    def local_path(self, key: str) -> Path | None:
        return None


def test_a_store_without_local_files_is_read_through_a_download_cache(
    wh: Pipeline, event_log: EventLogFolder, tmp_path: Path
) -> None:
    line = decision("e1", 0)
    event_log.decisions(line)
    event_log.outcomes(reward("e1", 5, 1.0))
    store = _RemoteStore(wh.settings.storage.root)
    con = wh.connect()
    try:
        ingest(con, store, cache_dir=tmp_path / "cache")
        job = run_join(
            con,
            store,
            "default",
            wh.settings.experiment("default"),
            as_of=at(3600),
            cache_dir=tmp_path / "cache",
        )
    finally:
        con.close()

    assert wh.lines(job.train_key)[0].endswith(line[1:])
    assert sorted(p.name for p in (tmp_path / "cache").rglob("*.jsonl")) == sorted(
        p.name for p in event_log.written
    )


def test_segments_under_a_path_with_glob_characters_are_read_literally(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    root = tmp_path / "odd[1]*?{x}"
    wh = Pipeline(
        make_settings(
            storage={"root": str(root)},
            experiments={"default": {"reward": {"wait_seconds": 600, "backward_seconds": 60}}},
        )
    )
    log = EventLogFolder(root)
    log.decisions(decision("e1", 0))
    log.outcomes(reward("e1", 5, 1.0))

    assert wh.ingest().decision_lines == 1
    assert wh.labels(wh.join(as_of=at(3600))) == {"e1": (-1.0, "train")}
