"""The lines a batch decides: JSON lines as they are, or the rows of a Parquet file.

Each Parquet row becomes the JSON body of one rank request, so it goes through exactly the
checks /v1/rank applies. Parquet stores a column of nested maps with different keys as a
struct holding every key seen, the missing ones null; a null feature or namespace therefore
means "absent" and is dropped (a null is never a valid feature value, so nothing a client
meant is lost). Row numbers stand in for line numbers.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import orjson

from cbloop.errors import InvalidInput

PARQUET_SUFFIXES = (".parquet", ".pq")
_FETCH_ROWS = 4096


class UnreadableInput(InvalidInput):
    """The input file cannot be read as the format its name says."""


def is_parquet(path: Path) -> bool:
    return path.suffix.lower() in PARQUET_SUFFIXES


def count_inputs(path: Path) -> int:
    """How many requests the file holds (lines, or Parquet rows)."""
    if is_parquet(path):
        with duckdb.connect() as con:
            row = _query(con, path, "SELECT count(*) FROM read_parquet(?)").fetchone()
        return int(row[0]) if row else 0
    with path.open("rb") as handle:
        return sum(block.count(b"\n") for block in iter(lambda: handle.read(1 << 20), b""))


def input_lines(path: Path) -> Iterator[bytes]:
    """Every request of the file as raw JSON bytes (a JSON-lines file's lines unchanged)."""
    if not is_parquet(path):
        with path.open("rb") as handle:
            yield from handle
        return
    with duckdb.connect() as con:
        cursor = _query(con, path, "SELECT * FROM read_parquet(?)")
        names = [column[0] for column in cursor.description or ()]
        while rows := cursor.fetchmany(_FETCH_ROWS):
            for row in rows:
                body = {k: _plain(v) for k, v in zip(names, row, strict=True) if v is not None}
                yield orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS)


def _query(con: duckdb.DuckDBPyConnection, path: Path, sql: str) -> duckdb.DuckDBPyConnection:
    try:
        return con.execute(sql, [str(path)])
    except duckdb.Error as exc:
        raise UnreadableInput(f"{path} is not a readable Parquet file: {exc}") from None


def _plain(value: Any) -> Any:
    """A DuckDB value as JSON-ready Python, with null struct fields dropped."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, Decimal):
        return float(value)
    return value
