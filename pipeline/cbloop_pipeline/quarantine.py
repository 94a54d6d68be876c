"""What ingest quarantined (migration 0020's `quarantined_lines`), summed for the report."""

from __future__ import annotations

from dataclasses import dataclass

import duckdb


@dataclass(frozen=True)
class QuarantineSummary:
    total: int
    #: Lines that name the experiment (a line too broken to name one counts only in `total`).
    of_experiment: int
    #: reason -> lines, most frequent first
    reasons: list[tuple[str, int]]

    def line(self, experiment: str) -> str | None:
        """The why of the report's quarantine count (which the report itself prints)."""
        if not self.total:
            return None
        top = "; ".join(f"{reason} ({n})" for reason, n in self.reasons[:3])
        return f"quarantined: {self.of_experiment} of experiment {experiment}; most often: {top}"


def quarantine_summary(con: duckdb.DuckDBPyConnection, experiment: str) -> QuarantineSummary:
    row = con.execute(
        "SELECT count(*), count(*) FILTER (WHERE experiment = ?) FROM quarantined_lines",
        [experiment],
    ).fetchone()
    reasons = con.execute(
        "SELECT reason, count(*) AS n FROM quarantined_lines GROUP BY reason "
        "ORDER BY n DESC, reason"
    ).fetchall()
    assert row is not None  # aggregates always yield a row
    return QuarantineSummary(int(row[0]), int(row[1]), [(str(r), int(n)) for r, n in reasons])
