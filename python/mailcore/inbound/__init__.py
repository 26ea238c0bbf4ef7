"""Inbound mail parsing (sans-IO): bounces (RFC 3464 DSNs and common plain-text
bounces), abuse complaints (RFC 5965 ARF) and signed VERP return paths."""

from __future__ import annotations

from . import _mime
from .arf import Complaint, complaint_from_message, parse_arf
from .dsn import (
    Dsn,
    DsnRecipient,
    dsn_from_message,
    heuristic_from_message,
    parse_bounce_heuristic,
    parse_dsn,
)
from .verp import VerpCodec

__all__ = [
    "Complaint",
    "Dsn",
    "DsnRecipient",
    "VerpCodec",
    "classify",
    "parse_arf",
    "parse_bounce_heuristic",
    "parse_dsn",
]


def classify(raw: bytes) -> Dsn | Complaint | None:
    """What an inbound message to the return path or feedback address is: a complaint
    (ARF), a bounce (RFC 3464 DSN, else a confidently recognised plain-text bounce), or
    None. Never raises on malformed input."""
    msg = _mime.parse_message(raw)
    if msg is None:
        return None
    return complaint_from_message(msg) or dsn_from_message(msg) or heuristic_from_message(msg)
