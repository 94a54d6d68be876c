"""What each page renders: the page's data, gathered from the queries, charts and health."""

from __future__ import annotations

from typing import Any

import duckdb

from cbloop.clock import utcnow_naive
from cbloop.settings import ExperimentSettings, Settings, parse_duration
from cbloop_pipeline.dashboard import charts, health, queries

Context = dict[str, Any]


def mode_of(experiment: ExperimentSettings | None) -> str:
    """The learning mode (online | apprentice | logging_only); online where not configured."""
    for field in ("mode", "learning_mode"):
        value = getattr(experiment, field, None)
        if isinstance(value, str):
            return value
    return "online"


def holdout_share_of(experiment: ExperimentSettings | None) -> float | None:
    holdout = getattr(experiment, "holdout", None)
    for field in ("share", "fraction", "ratio"):
        value = getattr(holdout, field, None)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    return None


class Pages:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.loop_period = parse_duration(settings.pipeline.every)

    def _experiment(self, name: str) -> ExperimentSettings | None:
        return self.settings.experiments.get(name)

    def names(self, con: duckdb.DuckDBPyConnection) -> list[str]:
        return queries.experiment_names(con, list(self.settings.experiments))

    def require(self, con: duckdb.DuckDBPyConnection, name: str) -> None:
        if name not in self.names(con):
            raise queries.UnknownExperiment(f"unknown experiment {name!r}")

    def warnings(self, con: duckdb.DuckDBPyConnection, name: str) -> list[dict[str, Any]]:
        return health.as_dicts(
            health.check(
                con,
                name,
                now=utcnow_naive(),
                loop_period=self.loop_period,
                holdout_share=holdout_share_of(self._experiment(name)),
            )
        )

    def overview(self, con: duckdb.DuckDBPyConnection) -> Context:
        rows = []
        for name in self.names(con):
            st = queries.state(con, name) or {}
            rows.append(
                {
                    "name": name,
                    "configured": name in self.settings.experiments,
                    "mode": mode_of(self._experiment(name)),
                    "serving_model": queries.serving_model(con, name),
                    "cycle": st.get("cycle"),
                    "cycle_status": st.get("status"),
                    "cycle_step": st.get("step"),
                    "cycle_finished_at": st.get("cycle_finished_at"),
                    "last_error": st.get("last_error"),
                    "last_day": queries.last_day(con, name),
                    "warnings": self.warnings(con, name),
                }
            )
        return {"experiments": rows, "snapshot": queries.meta(con)}

    def experiment(self, con: duckdb.DuckDBPyConnection, name: str) -> Context:
        self.require(con, name)
        return {
            "name": name,
            "mode": mode_of(self._experiment(name)),
            "serving_model": queries.serving_model(con, name),
            "state": queries.state(con, name),
            "warnings": self.warnings(con, name),
            "charts": {cid: build(con, name) for cid, build in charts.EXPERIMENT_CHARTS.items()},
            "by_model": queries.by_model(con, name),
            "timeline": queries.timeline(con, name),
            "offline_online": queries.offline_vs_online(con, name),
            "holdout": queries.holdout(con, name),
            "ope": queries.ope_series(con, name),
            "delays": queries.delays(con, name),
            "unused": queries.unused_rewards(con, name),
            "steps": queries.recent_steps(con, name),
            "models": queries.models(con, name),
            "snapshot": queries.meta(con),
        }

    def model(self, con: duckdb.DuckDBPyConnection, name: str, model_id: str) -> Context:
        self.require(con, name)
        detail = queries.model_detail(con, name, model_id)
        return {
            **detail,
            "name": name,
            "charts": {"estimates": charts.model_estimates(detail)},
            "snapshot": queries.meta(con),
        }
