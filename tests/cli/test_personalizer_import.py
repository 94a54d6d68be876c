"""`cbloop import` of Personalizer DSJSON history and `cbloop import-model`, through the CLI.

The DSJSON files are written here from the documented format (joined interactions with
`_label_*`, `a`, `p`, `c._multi`, observations in `o`, `_skipLearn`, drop summaries), from a
seeded world whose best policy is known, so the join, training and evaluation that follow
can be checked against it.
"""

from __future__ import annotations

import random
import tempfile
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pytest
import vowpalwabbit
from cli_helpers import CliRun, write_config

from cbloop.registry import ModelRegistry
from cbloop.settings import load_settings
from cbloop.storage import open_store
from cbloop_pipeline import dsjson_import

USERS = ("student", "parent", "retired")
ACTIONS = ("games", "toys", "garden")
#: The action each user type rewards; every other action gets 0.
BEST = {"student": "games", "parent": "toys", "retired": "garden"}
EPSILON = 0.3


def _interaction(rng: random.Random, i: int) -> dict[str, Any]:
    user = rng.choice(USERS)
    # The logging policy: mostly the action it believed best, else uniform; p is exact.
    believed = BEST[user] if i % 4 else ACTIONS[i % 3]
    pmf = {a: EPSILON / 3 + (1 - EPSILON if a == believed else 0.0) for a in ACTIONS}
    chosen = rng.choices(ACTIONS, weights=[pmf[a] for a in ACTIONS])[0]
    order = [chosen, *(a for a in ACTIONS if a != chosen)]
    a = [ACTIONS.index(x) + 1 for x in order]
    reward = 1.0 if chosen == BEST[user] else 0.0
    event_id = f"pz-{i:05d}"
    return {
        "_label_cost": -reward,
        "_label_probability": pmf[chosen],
        "_label_Action": a[0],
        "_labelIndex": a[0] - 1,
        "o": [{"v": reward, "EventId": event_id, "ActionTaken": False}],
        "Timestamp": f"2024-03-01T10:{i // 60 % 60:02d}:{i % 60:02d}.1234567Z",
        "Version": "1",
        "EventId": event_id,
        "a": a,
        "c": {
            "user": {"type": user, "visits": {"last30": 3 + i % 5}},
            "_multi": [{"_tag": x, "item": {"category": x, "tags": ["sale", x]}} for x in ACTIONS],
        },
        "p": [pmf[x] for x in order],
        "VWState": {"m": "personalizer-model-7"},
        "pdrop": 0.0,
    }


MALFORMED = [
    b'{"EventId": "broken-1", "Timestamp": ',  # not JSON
    b'["not", "an", "object"]',
    orjson.dumps({"EventId": "bad p", "Timestamp": "2024-03-01T11:00:00Z"}),  # bad id
]


def _write_history(path: Path, n: int = 600, seed: int = 3) -> dict[str, Any]:
    rng = random.Random(seed)
    lines = [orjson.dumps(_interaction(rng, i)) for i in range(n)]
    bad_sum = _interaction(rng, n)
    bad_sum["EventId"], bad_sum["p"] = "bad-sum", [0.5, 0.4, 0.4]
    bad_label = _interaction(rng, n + 1)
    bad_label["EventId"], bad_label["_label_Action"] = "bad-label", 9
    deferred_never = _interaction(rng, n + 2)
    deferred_never.update(EventId="deferred-never", _skipLearn=True)
    deferred_never.pop("o")
    deferred_active = _interaction(rng, n + 3)
    deferred_active["EventId"] = "deferred-active"
    deferred_active["o"] = [{"EventId": "deferred-active", "ActionTaken": True}, {"v": 1.0}]
    duplicate = orjson.loads(lines[5])
    extra = [
        orjson.dumps(bad_sum),
        orjson.dumps(bad_label),
        orjson.dumps(deferred_never),
        orjson.dumps(deferred_active),
        orjson.dumps(duplicate),
        orjson.dumps({"pdrop": 0.1, "Timestamp": "2024-03-01T12:00:00Z"}),
        *MALFORMED,
    ]
    path.write_bytes(b"\n".join(lines + extra) + b"\n")
    return {"good": n + 2, "quarantined": 2 + len(MALFORMED), "first_bad_line": n + 1}


@pytest.fixture
def config(tmp_path: Path) -> Path:
    data = {
        "storage": {"root": str(tmp_path / "data")},
        "logging": {"level": "WARNING", "format": "text"},
        "experiments": {
            "default": {
                "vw_args": "--interactions ::A -b 18",
                "split": {"train_ratio": 0.5},
                "promotion": {"min_events": 10},
            }
        },
    }
    return write_config(tmp_path / "config.yaml", data)


def _decision_count(config: Path) -> int:
    settings = load_settings(config, env={})
    con = duckdb.connect(str(settings.warehouse.path), read_only=True)
    try:
        row = con.execute("SELECT count(*) FROM decisions").fetchone()
    finally:
        con.close()
    assert row is not None
    return int(row[0])


def test_import_history_then_join_train_and_evaluate_on_it(
    run_cli: CliRun, config: Path, tmp_path: Path
) -> None:
    history = tmp_path / "personalizer.dsjson"
    expected = _write_history(history)

    first = run_cli(config, "import", "-e", "default", str(history))
    assert first.exit_code == 1, first.output  # some lines were quarantined
    assert f"{expected['good']} decisions" in first.output
    assert f"{expected['quarantined']} lines quarantined" in first.output
    assert "1 duplicate event ids dropped, 1 pdrop lines skipped" in first.output
    assert "1 activations" in first.output
    assert f"line {expected['first_bad_line']}: p sums to" in first.output
    assert "_label_Action 9 is not the chosen action" in first.output
    assert "not valid JSON" in first.output
    assert _decision_count(config) == expected["good"]

    again = run_cli(config, "import", "-e", "default", str(history))
    assert again.exit_code == 0, again.output
    assert "already imported" in again.output
    assert _decision_count(config) == expected["good"]

    joined = run_cli(config, "join", "-e", "default", "--json")
    assert joined.exit_code == 0, joined.output
    job = orjson.loads(joined.output)
    # Every imported decision is joined but the deferred one never activated.
    assert job["joined"] == expected["good"] - 1
    assert job["skipped_not_activated"] == 1
    assert job["rewarded"] == expected["good"] - 1

    settings = load_settings(config, env={})
    store = open_store(settings.storage)
    eval_lines = [orjson.loads(x) for x in store.get_bytes(job["eval_key"]).splitlines() if x]
    train_lines = [orjson.loads(x) for x in store.get_bytes(job["train_key"]).splitlines() if x]
    by_id = {x["EventId"]: x for x in eval_lines + train_lines}
    source = orjson.loads(history.read_bytes().splitlines()[0])
    line = by_id[source["EventId"]]
    # Original propensities, order, time and label survive the import.
    assert line["p"] == source["p"] and line["a"] == source["a"]
    assert line["_label_probability"] == source["_label_probability"]
    assert line["_label_cost"] == source["_label_cost"]
    assert line["Timestamp"] == "2024-03-01T10:00:00.123456Z"
    assert line["action_ids"] == list(ACTIONS)
    assert line["c"]["user"] == {"type": "=" + source["c"]["user"]["type"], "visits.last30": 3}
    assert line["c"]["_multi"][0]["item"] == {
        "category": "=games",
        "tags[0]": "=sale",
        "tags[1]": "=games",
    }

    trained = run_cli(config, "train", "-e", "default")
    assert trained.exit_code == 0, trained.output
    evaluated = run_cli(config, "evaluate", "-e", "default")
    assert evaluated.exit_code == 0, evaluated.output
    summary_path = next(
        Path(x.split(":", 1)[1].strip())
        for x in evaluated.output.splitlines()
        if x.startswith("summary:")
    )
    summary = orjson.loads(summary_path.read_bytes())
    logged = summary["policies"]["logging"]["estimates"]["logging"]["value"]
    candidate_dr = summary["policies"]["candidate"]["estimates"]["dr"]["value"]
    # The logging policy's reward is known from the world: it picks the best action with
    # probability 0.75 * 0.8 + 0.25 * (0.8 / 3 + 0.2 / 3) = 0.683.
    assert 0.6 < logged < 0.77
    # Learned from the imported history, the candidate finds the best action per user.
    assert candidate_dr > 0.9


def test_a_file_of_only_bad_lines_imports_nothing(
    run_cli: CliRun, config: Path, tmp_path: Path
) -> None:
    history = tmp_path / "bad.dsjson"
    history.write_bytes(b"\n".join(MALFORMED) + b"\n")
    result = run_cli(config, "import", "-e", "default", str(history))
    assert result.exit_code == 1
    assert "0 decisions" in result.output and "3 lines quarantined" in result.output
    settings = load_settings(config, env={})
    store = open_store(settings.storage)
    quarantined = [x for x in store.list("imports/default/") if x.key.endswith("quarantine.jsonl")]
    (entry,) = quarantined
    lines = [orjson.loads(x) for x in store.get_bytes(entry.key).splitlines()]
    assert [x["line"] for x in lines] == [1, 2, 3]


def test_unknown_experiment_is_refused(run_cli: CliRun, config: Path, tmp_path: Path) -> None:
    history = tmp_path / "h.dsjson"
    _write_history(history, n=10)
    result = run_cli(config, "import", "-e", "nope", str(history))
    assert result.exit_code == 2
    assert "unknown experiment 'nope'" in result.output


def _model(args: str) -> Path:
    workspace = vowpalwabbit.Workspace(arg_list=[*args.split(), "--quiet"])
    path = Path(tempfile.mkdtemp()) / "exported.vw"
    workspace.save(str(path))
    workspace.finish()
    return path


def test_import_model_makes_a_compatible_model_the_current_one(
    run_cli: CliRun, config: Path
) -> None:
    settings = load_settings(config, env={})
    args = settings.experiment("default").vw_arguments()
    result = run_cli(config, "import-model", "-e", "default", str(_model(args)))
    assert result.exit_code == 0, result.output
    registry = ModelRegistry(open_store(settings.storage))
    pointer = registry.current("default")
    assert pointer is not None and pointer.model_id in result.output


def test_import_model_refuses_personalizer_options_and_says_which(
    run_cli: CliRun, config: Path
) -> None:
    path = _model("--cb_explore_adf --epsilon 0.2 --power_t 0 -l 0.001 --cb_type mtr -q ::")
    result = run_cli(config, "import-model", "-e", "default", str(path))
    assert result.exit_code == 2
    assert "--epsilon" in result.output and "--quadratic ::" in result.output
    settings = load_settings(config, env={})
    assert ModelRegistry(open_store(settings.storage)).current("default") is None


def test_a_crash_before_the_manifest_rewrites_the_same_segments(
    run_cli: CliRun, config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dsjson_import, "LINES_PER_SEGMENT", 100)
    history = tmp_path / "big.dsjson"
    expected = _write_history(history, n=350)
    assert run_cli(config, "import", str(history)).exit_code == 1
    settings = load_settings(config, env={})
    store = open_store(settings.storage)
    keys = sorted(i.key for i in store.list("events/decisions/"))
    assert len(keys) == 4  # 352 decisions, 100 a segment
    assert all("/date=2024-03-01/hour=10/import-" in k for k in keys)
    # As if the first run died after its segments but before its manifest.
    (manifest,) = [i.key for i in store.list("imports/default/") if i.key.endswith("manifest.json")]
    store.delete(manifest)
    assert run_cli(config, "import", str(history)).exit_code == 1
    assert sorted(i.key for i in store.list("events/decisions/")) == keys
    assert _decision_count(config) == expected["good"]
