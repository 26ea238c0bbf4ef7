"""This process as one node of a deployment: its id, its roles, and what it is doing, for
its health endpoint.

A deployment scales each part separately: ``mailcore serve --role api`` processes answer
HTTP, ``--role sender`` processes deliver campaigns, ``--role webhooks`` processes deliver
the outbox (``all``, the default, is one process doing everything). Nodes share nothing
but the database; the id names this process in the leases it holds.
"""

from __future__ import annotations

import gc
import os
import secrets
import socket
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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


SENDER_GC_THRESHOLDS = (100_000, 50, 100)
"""The cyclic garbage collector's thresholds in a sender process (Python's default: 700,
10, 10).

A sender makes and drops several container objects per message (its work, its outbound
message, its outcome and result), nearly none of them in a cycle. With the default the
collector runs every few dozen messages and its older generations walk everything alive:
4 % of a sender's CPU in the send benchmark (perf: gc_collect_main, visit_decref,
visit_reachable)."""


def tune_sender_process() -> None:
    """Settings for a process whose main work is sending (``mailcore serve`` with the
    sender role calls it; a program embedding the sender may too): the GIL switch
    interval and the collector's thresholds above, and what exists so far (modules,
    settings) frozen out of the collector's walks. Process-wide, so the library never
    does this on its own."""
    sys.setswitchinterval(SENDER_SWITCH_INTERVAL)
    gc.set_threshold(*SENDER_GC_THRESHOLDS)
    gc.freeze()


def new_node_id() -> str:
    """Unique across machines and restarts: host, process, and a random part (a pid is
    reused after a restart; a restarted process must not inherit the dead one's leases)."""
    return f"{_pid_space()}:{os.getpid()}:{secrets.token_hex(3)}"


def _pid_space() -> str:
    """Where this process's pid means something: the host name, and the pid namespace
    when there is one to tell (two containers may share a host name, not their pids)."""
    host = socket.gethostname()
    try:
        return f"{host}~{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:
        return host


# Node ids whose sender runs in this process (a Mailcore's sender may stop and start again
# in the same process, under the same id).
_running_senders: set[str] = set()


@contextmanager
def sender_running(node_id: str) -> Iterator[None]:
    """Mark ``node_id``'s sender as running in this process while the block runs."""
    _running_senders.add(node_id)
    try:
        yield
    finally:
        _running_senders.discard(node_id)


def lease_owner_stopped(owner: str) -> bool:
    """Whether the sender that leased recipients as ``owner`` (a :func:`new_node_id`) has
    certainly stopped: a node of this process whose sender is not running, or of another
    process of this machine and pid namespace that is gone. False when it may still run
    (its process is alive, or a reused pid looks so), or runs on another machine or in
    another container: then only its leases' expiry tells."""
    space, _, rest = owner.partition(":")
    pid_text, _, _ = rest.partition(":")
    if space != _pid_space() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return owner not in _running_senders
    return not _process_alive(pid)


def _process_alive(pid: int) -> bool:
    try:
        # A zombie (killed, not yet reaped by its parent) runs no more.
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rpartition(b")")[2].split()[0] != b"Z"
    except FileNotFoundError:
        return False
    except OSError:
        pass  # no /proc: ask the kernel
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


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


__all__ = [
    "ROLES",
    "Node",
    "SenderActivity",
    "WebhookActivity",
    "lease_owner_stopped",
    "new_node_id",
    "parse_roles",
    "sender_running",
]
