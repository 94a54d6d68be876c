"""The registry mirrored into the warehouse: models, evaluations, deployment decisions.

Everything here is derived from the registry's metadata files and written with upserts, so
syncing is idempotent and a mirror left behind by a killed process is repaired by the next
sync. Tables: migrations 0010-0012.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import duckdb

from cbloop.clock import parse_ts, to_naive_utc, utcnow_naive
from cbloop.registry import ModelMetadata, ModelRegistry
from cbloop_pipeline.models import events_total

logger = logging.getLogger(__name__)

#: History entries that are deployment decisions (see pipeline.deploy).
DECISION_EVENTS = ("promotion", "rollback")


def _naive(text: str) -> datetime:
    """Registry times (ISO 8601, Z) as the naive UTC datetimes the warehouse stores."""
    return to_naive_utc(parse_ts(text))


def sync_models(con: duckdb.DuckDBPyConnection, models: Iterable[ModelMetadata]) -> int:
    """Upsert each model's row, evaluations and decisions; returns the number of models."""
    count = 0
    now = utcnow_naive()
    con.begin()
    try:
        for meta in models:
            _upsert_model(con, meta, now)
            for record in meta.evaluations:
                _upsert_evaluation(con, record)
            for entry in meta.history:
                if entry.get("what") in DECISION_EVENTS and "decision_id" in entry:
                    _upsert_decision(con, meta.experiment, entry)
            count += 1
        con.commit()
    except BaseException:
        con.rollback()
        raise
    return count


def sync_experiment(con: duckdb.DuckDBPyConnection, registry: ModelRegistry, name: str) -> int:
    """Bring the mirror of one experiment in line with the registry."""
    count = sync_models(con, registry.list_models(name))
    logger.debug("mirrored %d models of %s", count, name)
    return count


def _upsert_model(con: duckdb.DuckDBPyConnection, meta: ModelMetadata, now: datetime) -> None:
    training = (meta.model_extra or {}).get("training") or {}
    last_eval = meta.evaluations[-1]["eval_id"] if meta.evaluations else None
    _upsert(
        con,
        "models",
        [
            meta.experiment,
            meta.model_id,
            meta.parent_id,
            meta.state,
            meta.vw_args,
            _naive(meta.created_at),
            list(meta.joins),
            meta.events_trained,
            events_total(meta),
            meta.progressive_loss,
            training.get("seconds"),
            last_eval,
            meta.model_dump_json(),
            now,
        ],
    )


def _upsert_evaluation(con: duckdb.DuckDBPyConnection, record: dict[str, Any]) -> None:
    eval_id = record["eval_id"]
    _upsert(
        con,
        "evaluations",
        [
            eval_id,
            record["experiment"],
            record["model_id"],
            record.get("deployed_model_id"),
            _naive(record["created_at"]),
            list(record.get("joins", [])),
            record["n_events"],
            record["confidence"],
            record["primary_estimator"],
            record.get("effective_sample_size"),
            record.get("max_importance_weight"),
            record.get("seconds"),
            record["events_key"],
            record["summary_key"],
        ],
    )
    for policy, body in record["policies"].items():
        if not body:
            continue
        for estimator, est in body["estimates"].items():
            _upsert(
                con,
                "evaluation_estimates",
                [
                    eval_id,
                    policy,
                    body.get("model_id"),
                    estimator,
                    est.get("value"),
                    est.get("ci_low"),
                    est.get("ci_high"),
                    est.get("n"),
                    est.get("ess"),
                    est.get("max_weight"),
                    est.get("std_error"),
                ],
            )


def _upsert_decision(
    con: duckdb.DuckDBPyConnection, experiment: str, entry: dict[str, Any]
) -> None:
    _upsert(
        con,
        "deployment_decisions",
        [
            entry["decision_id"],
            experiment,
            "rollback" if entry["what"] == "rollback" else "deploy",
            entry["model_id"],
            entry.get("previous_model_id"),
            bool(entry.get("promoted")),
            bool(entry.get("forced")),
            entry.get("eval_id"),
            entry.get("estimator"),
            entry.get("candidate_value"),
            entry.get("deployed_value"),
            entry.get("margin"),
            entry.get("use_lower_bound"),
            entry.get("n_events"),
            entry.get("reason", ""),
            _naive(entry["at"]),
        ],
    )


def _upsert(con: duckdb.DuckDBPyConnection, table: str, row: list[Any]) -> None:
    """Replace the row with the same primary key (tables here are keyed by id)."""
    marks = ", ".join("?" * len(row))
    con.execute(f"INSERT OR REPLACE INTO {table} VALUES ({marks})", row)
