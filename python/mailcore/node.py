"""This process as one node of a deployment: its id, its roles, and what it is doing, for
its health endpoint.

A deployment scales each part separately: ``mailcore serve --role api`` processes answer
HTTP, ``--role sender`` processes deliver campaigns, ``--role webhooks`` processes deliver
the outbox (``all``, the default, is one process doing everything). Nodes share nothing
but the database; the id names this process in the leases it holds.
"""

from __future__ import annotations

import os
import secrets
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .errors import ValidationError

ROLES = ("api", "sender", "webhooks")


def parse_roles(text: str) -> frozenset[str]:
    """``"all"``, one role, or several separated by commas (``"api,webhooks"``)."""
    parts = {p.strip().lower() for p in text.split(",") if p.strip()}
    if not parts:
        raise ValidationError("no role given (api, sender, webhooks or all)", field="role")
    if "all" in parts:
        if len(parts) > 1:
            raise ValidationError("'all' cannot be combined with other roles", field="role")
        return frozenset(ROLES)
    unknown = sorted(parts - set(ROLES))
    if unknown:
        raise ValidationError(
            f"unknown role {', '.join(unknown)} (expected api, sender, webhooks or all)",
            field="role",
        )
    return frozenset(parts)


SENDER_SWITCH_INTERVAL = 0.0005
"""Python's GIL switch interval in a sender process, in seconds (Python's default: 0.005).

The sender's event loop runs every SMTP connection; its worker threads (the engine's
render, the store's writer) hold the GIL for short stretches of Python between their
GIL-free work. With the default, a loop that wants the GIL back may wait up to 5 ms, and
every connection waits with it; at 0.5 ms the send benchmark runs about 7 % faster."""


def tune_sender_process() -> None:
    """Settings for a process whose main work is sending (``mailcore serve`` with the
    sender role calls it; a program embedding the sender may too): the GIL switch
    interval above. Process-wide, so the library never does this on its own."""
    sys.setswitchinterval(SENDER_SWITCH_INTERVAL)


def new_node_id() -> str:
    """Unique across machines and restarts: host, process, and a random part (a pid is
    reused after a restart; a restarted process must not inherit the dead one's leases)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


@dataclass
class SenderActivity:
    """Kept up to date by the send dispatcher."""

    # campaign id -> recipients this node has sent and recorded for it (while it sends)
    campaigns: dict[str, int] = field(default_factory=dict)
    recorded: int = 0
    last_claim_at: float | None = None
    # Reads the dispatcher's in-flight window (leased, not yet recorded).
    in_flight_now: Callable[[], int] = lambda: 0

    @property
    def in_flight(self) -> int:
        return self.in_flight_now()


@dataclass
class WebhookActivity:
    delivered: int = 0
    last_claim_at: float | None = None


@dataclass
class Node:
    id: str = field(default_factory=new_node_id)
    roles: frozenset[str] = frozenset(ROLES)
    started_at: float = field(default_factory=time.time)
    sender: SenderActivity | None = None
    webhooks: WebhookActivity | None = None


__all__ = ["ROLES", "Node", "SenderActivity", "WebhookActivity", "new_node_id", "parse_roles"]
