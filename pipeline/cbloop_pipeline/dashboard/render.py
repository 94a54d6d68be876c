"""Jinja rendering of the pages, for the live app and for a static snapshot on disk.

Templates name every link by its live path (`/experiments/x`); `link` turns it into what the
mode needs: the path itself when served, or a relative `.html`/`.json` file in a snapshot
folder, so the same templates serve both.
"""

from __future__ import annotations

import math
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
import orjson

PACKAGE_DIR = Path(str(resources.files("cbloop_pipeline.dashboard")))
TEMPLATES_DIR = PACKAGE_DIR / "templates"
STATIC_DIR = PACKAGE_DIR / "static"


def static_file(path: str) -> str:
    """The snapshot file of a live path: `/` -> index.html, `/api/x` -> api/x.json."""
    clean = path.strip("/")
    if not clean:
        return "index.html"
    if clean.startswith("static/"):
        return clean
    suffix = ".json" if clean.startswith("api/") else ".html"
    return clean + suffix


#: What a missing figure prints as (an en dash, as tables do).
MISSING = "\u2013"


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return MISSING if not math.isfinite(value) else f"{value:.{digits}f}"
    return str(value)


def _json(value: Any) -> str:
    # Inside <script type="application/json">: "</" must not close the element.
    return orjson.dumps(value).decode().replace("</", "<\\/")


class Renderer:
    def __init__(self, *, static: bool = False) -> None:
        self.static = static
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)),
            autoescape=jinja2.select_autoescape(["html"]),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters["fmt"] = _fmt
        self.env.filters["tojson_script"] = _json
        self.env.filters["q"] = lambda s: quote(str(s), safe="")

    def render(self, template: str, page_path: str, context: dict[str, Any]) -> str:
        depth = static_file(page_path).count("/")

        def link(path: str) -> str:
            if not self.static:
                return path
            return "../" * depth + static_file(path)

        return self.env.get_template(template).render(
            **context, link=link, static_mode=self.static, page_path=page_path
        )
