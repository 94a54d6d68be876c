"""Segment files as DuckDB reads them: local paths for store keys, and the line-reading SQL.

The warehouse keeps what the join computes with; a decision line's bytes stay in its closed
(hence immutable) segment, addressed by (segment_id, line_no), and the export copies them
from there. With a local store the segment files are read where they are; with a remote
store (S3) ingest downloads them into a cache folder that the export reads again.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from cbloop.storage import ObjectStore

# DuckDB expands glob characters in a file path, so paths holding one are read through a
# symlink with a plain name.
_GLOB_CHARS = frozenset("*?[]{}")


class SegmentSource:
    """Local files for segment keys of `store`."""

    def __init__(self, store: ObjectStore, cache_dir: Path) -> None:
        self.store = store
        self.cache_dir = cache_dir

    @classmethod
    def beside(
        cls, store: ObjectStore, con: duckdb.DuckDBPyConnection, cache_dir: Path | None = None
    ) -> SegmentSource:
        """A source whose download cache (remote stores only) sits next to the warehouse file."""
        if cache_dir is None:
            row = con.execute(
                "SELECT path FROM duckdb_databases() WHERE database_name = current_database()"
            ).fetchone()
            if row is None or row[0] is None:
                cache_dir = Path(tempfile.gettempdir()) / "cbloop-segments"
            else:
                db = Path(str(row[0]))
                cache_dir = db.with_name(db.name + ".segments")
        return cls(store, cache_dir)

    def path(self, key: str) -> Path:
        local = self.store.local_path(key)
        if local is not None:
            return local
        cached = self.cache_dir / key
        if not cached.is_file():
            cached.parent.mkdir(parents=True, exist_ok=True)
            partial = cached.with_name(cached.name + ".part")
            self.store.get_file(key, partial)
            partial.replace(cached)
        return cached

    @contextmanager
    def readable(self, keys: Sequence[str]) -> Iterator[list[str]]:
        """Paths (as DuckDB should be given them) for `keys`, valid inside the block."""
        with tempfile.TemporaryDirectory(prefix="cbloop-segments-") as tmp:
            out: list[str] = []
            for i, key in enumerate(keys):
                path = self.path(key).resolve()
                if _GLOB_CHARS & set(str(path)):
                    link = Path(tmp) / f"{i:06d}.jsonl"
                    os.symlink(path, link)
                    path = link
                out.append(str(path))
            yield out


@dataclass(frozen=True)
class FileSet:
    """Segment files with their segment ids, as DuckDB SQL that reads them.

    DuckDB runs one read_text scan on a single thread, so the files are dealt into several
    groups, one read_text each, joined by UNION ALL: the groups' pipelines run in parallel.
    Use `params` as the statement's parameters.
    """

    params: dict[str, list[Any]]
    groups: int

    @classmethod
    def of(cls, paths: Sequence[str], segment_ids: Sequence[int], groups: int) -> FileSet:
        if len(paths) != len(segment_ids):
            raise ValueError("one segment id per file")
        groups = min(max(1, groups), len(paths))  # no files: no groups
        params: dict[str, list[Any]] = {}
        for g in range(groups):
            params[f"files_{g}"] = list(paths[g::groups])
            params[f"sids_{g}"] = list(segment_ids[g::groups])
        return cls(params, groups)

    def files_sql(self) -> str:
        """One row per file: `segment_id` and `l`, the file's lines as a list.

        A file's line n is l[n]; the last element is the '' after the final newline. Reading
        a file whole and splitting it numbers its lines exactly, whatever the parallelism.
        """
        return (
            "("
            + " UNION ALL ".join(
                f"SELECT $sids_{g}[list_position($files_{g}, filename)] AS segment_id, "
                f"string_split(content, chr(10)) AS l FROM read_text($files_{g})"
                for g in range(self.groups)
            )
            + ")"
        )

    def lines_sql(self) -> str:
        """The files' non-blank lines: segment_id, line_no (1-based), line."""
        return f"""(
            SELECT segment_id, line_no, line
            FROM (
                SELECT segment_id, unnest(l) AS line, generate_subscripts(l, 1) AS line_no
                FROM {self.files_sql()}
            )
            WHERE line <> ''
        )"""


def scan_groups(con: duckdb.DuckDBPyConnection) -> int:
    """How many file groups to read at once: two per DuckDB thread, for balance."""
    row = con.execute("SELECT current_setting('threads')").fetchone()
    threads = int(row[0]) if row is not None else 1
    return 2 * max(1, threads)
