"""A static copy of the dashboard: every page, its JSON and the assets, in one folder.

The pages are rendered by the same templates as the live app, with links made relative, so
the folder opens from disk (`index.html`) or from any static file server, with no cbloop.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import orjson

from cbloop.settings import Settings
from cbloop_pipeline.dashboard import charts, queries
from cbloop_pipeline.dashboard.pages import Pages
from cbloop_pipeline.dashboard.reader import SnapshotReader
from cbloop_pipeline.dashboard.render import STATIC_DIR, Renderer, static_file
from cbloop_pipeline.dashboard.snapshot import publish


def export_static(settings: Settings, snapshot: Path, dest: Path) -> list[Path]:
    """Write the dashboard of `snapshot` to `dest`; the files written."""
    reader = SnapshotReader(snapshot)
    pages, renderer = Pages(settings), Renderer(static=True)
    written: list[Path] = []

    def page(path: str, template: str, context: dict[str, Any]) -> None:
        written.append(_write(dest, path, renderer.render(template, path, context).encode()))
        written.append(
            _write(dest, "/api" + (path if path != "/" else "/overview"), orjson.dumps(context))
        )

    try:
        con = reader.cursor()
        page("/", "overview.html", pages.overview(con))
        for name in pages.names(con):
            base = f"/experiments/{name}"
            page(base, "experiment.html", pages.experiment(con, name))
            for chart_id, build in charts.EXPERIMENT_CHARTS.items():
                spec = orjson.dumps(build(con, name))
                written.append(_write(dest, f"/api{base}/charts/{chart_id}", spec))
            for model in queries.models(con, name):
                mid = str(model["model_id"])
                context = pages.model(con, name, mid)
                page(f"{base}/models/{mid}", "model.html", context)
                spec = orjson.dumps(context["charts"]["estimates"])
                written.append(_write(dest, f"/api{base}/models/{mid}/charts/estimates", spec))
    finally:
        reader.close()
    target = dest / "static"
    shutil.copytree(STATIC_DIR, target, dirs_exist_ok=True)
    written.extend(p for p in target.rglob("*") if p.is_file())
    return written


def _write(dest: Path, path: str, body: bytes) -> Path:
    out = dest / static_file(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(body)
    return out


def write_run_dashboard(settings: Settings, dest: Path) -> Path:
    """Publish a snapshot of `settings`' warehouse into `dest` and write the static pages
    beside it; the path of the overview page."""
    dest.mkdir(parents=True, exist_ok=True)
    snapshot = publish(settings, dest=dest / "snapshot.duckdb")
    export_static(settings, snapshot, dest)
    return dest / "index.html"
