"""Where segments live: events/<kind>/date=YYYY-MM-DD/hour=HH/<writer>-<seq>.jsonl."""

from __future__ import annotations

import os
import re
import socket
import time
from datetime import UTC, datetime
from typing import Literal

Kind = Literal["decisions", "outcomes"]
KINDS: tuple[Kind, ...] = ("decisions", "outcomes")
CLOSED_SUFFIX = ".jsonl"
OPEN_SUFFIX = ".jsonl.open"


def kind_prefix(kind: Kind) -> str:
    return f"events/{kind}/"


def partition(moment: float) -> str:
    dt = datetime.fromtimestamp(moment, UTC)
    return f"date={dt:%Y-%m-%d}/hour={dt:%H}"


def segment_key(kind: Kind, opened_at: float, writer_id: str, seq: int) -> str:
    """Key of the closed segment (the open file adds OPEN_SUFFIX's extra '.open')."""
    return f"{kind_prefix(kind)}{partition(opened_at)}/{writer_id}-{seq:06d}{CLOSED_SUFFIX}"


def is_closed_segment(key: str) -> bool:
    return key.endswith(CLOSED_SUFFIX) and "/." not in key


def new_writer_id() -> str:
    host = re.sub(r"[^A-Za-z0-9.]", "", socket.gethostname())[:40] or "host"
    return f"{host}-{os.getpid()}-{int(time.time() * 1000)}"
