"""Identifiers and timestamps as they appear on the wire."""

from __future__ import annotations

import base64
import secrets
from collections.abc import Callable
from datetime import UTC, datetime

from .errors import ValidationError

_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id(prefix: str) -> str:
    """``con_…``, ``cmp_…``, ``hold_…``, ``acc_…``: a prefix and 128 random bits in base62."""
    n = int.from_bytes(secrets.token_bytes(16))
    chars = []
    for _ in range(22):
        n, r = divmod(n, 62)
        chars.append(_ALPHABET[r])
    return f"{prefix}_" + "".join(chars)


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
