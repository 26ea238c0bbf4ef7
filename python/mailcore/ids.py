"""Identifiers and timestamps as they appear on the wire."""

from __future__ import annotations

import base64
import os
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime

from .errors import ValidationError

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


_POOL = 1024
_pools: dict[str, deque[str]] = {}
# A forked child must not hand out its parent's unused ids.
os.register_at_fork(after_in_child=_pools.clear)


def new_id(prefix: str) -> str:
    """``con_…``, ``cmp_…``, ``hold_…``, ``acc_…``: a prefix and 30 lower-case hex digits:
    48 bits of milliseconds then 72 random bits, so ids sort roughly by creation (new rows
    land at the right edge of the id index instead of on random pages) and cannot be
    guessed. Made a thousand at a time: imports make millions."""
    pool = _pools.get(prefix)
    if pool is None:
        pool = _pools.setdefault(prefix, deque())
    try:
        return pool.popleft()
    except IndexError:
        stamp = (time.time_ns() // 1_000_000).to_bytes(6, "big").hex()
        noise = os.urandom(9 * _POOL).hex()
        pool.extend(f"{prefix}_{stamp}{noise[i : i + 18]}" for i in range(18, len(noise), 18))
        return f"{prefix}_{stamp}{noise[:18]}"


def iso(ts: datetime) -> str:
    """ISO-8601 UTC with a ``Z``, to the second, as in the API's examples."""
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def encode_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(f"s{seq}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> int:
    """The position after which a page starts; ``None`` is the beginning."""
    if cursor is None or cursor == "":
        return 0
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        if not raw.startswith("s") or not raw[1:].isdigit():
            raise ValueError(raw)
        return int(raw[1:])
    except ValueError as exc:
        raise ValidationError("the cursor is not valid", field="after") from exc
