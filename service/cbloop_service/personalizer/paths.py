"""Personalizer endpoints copied with a trailing slash still reach the Personalizer routes.

Azure shows endpoints as `https://<name>.cognitiveservices.azure.com/`, and the SDKs append
`/personalizer/...` to whatever they are given, so an app moved to `http://host:8000/`
sends `//personalizer/rank`, which Azure's gateway accepted. Runs of slashes in a path that
holds `/personalizer` are collapsed before routing; every other path is left as it is.
"""

from __future__ import annotations

import re

from starlette.types import ASGIApp, Receive, Scope, Send

_RUNS = re.compile(r"//+")


class CollapseSlashes:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            if "//" in path and "/personalizer" in path:
                collapsed = _RUNS.sub("/", path)
                scope = {**scope, "path": collapsed, "raw_path": collapsed.encode()}
        await self.app(scope, receive, send)
