"""A fault-injecting SMTP sink for integration tests, and the log it keeps.

A :class:`FaultPlan` says, from a seed, which recipients are deferred (4xx to RCPT, on
their first ``defer_attempts`` attempts only) or bounced (5xx to RCPT, on every attempt),
after which messages the connection drops instead of answering (the message is stored
first: "the server took it, the reply was lost"), which connections are refused with 421
at the greeting, and which replies come late. Every decision is a pure function of the
seed and of (recipient, attempt), (connection id) or (connection id, reply index), so a
test can predict each outcome with :meth:`FaultPlan.outcome` instead of sampling.

A recipient's *attempt* is the number of RCPT commands for that address (lower-cased) the
sink has seen, this one included: a connection refused at the greeting, or dropped before
RCPT, does not use one up.

:class:`FaultSink` is a :class:`~mailcore.smtp.sink.Sink` that applies a plan and keeps a
:class:`SinkLog`: every connection and every transaction (times, connection id, client
IP, each RCPT with its attempt and reply, the final reply), the largest number of
concurrent connections (overall and per client IP), messages received and RCPT attempts
per recipient. In a test::

    plan = FaultPlan(seed=7, rcpt_defer=0.1, rcpt_bounce=0.05, disconnect=0.02)
    async with fault_sink(plan) as sink:
        ...  # send to 127.0.0.1:sink.port
    assert sink.log.max_concurrent <= 8

From the command line: ``mailcore sink --faults "seed=7,rcpt4xx=0.1,rcpt5xx=0.05"
--log sink.jsonl`` (:meth:`FaultPlan.parse`).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal, TypeAlias

import anyio

from .events import (
    ChunkReceived,
    CommandRejected,
    DataStart,
    Hello,
    MailFrom,
    MessageReceived,
    QuitRequested,
    RcptTo,
    ResetRequested,
    ServerEvent,
    StartTlsRequested,
)
from .reply import Reply
from .sink import DROP, Sink, SinkConnection

Outcome: TypeAlias = Literal["accept", "defer", "bounce", "disconnect"]

_SPEC_KEYS = {
    "seed": "seed",
    "rcpt4xx": "rcpt_defer",
    "rcpt4xx-attempts": "defer_attempts",
    "rcpt5xx": "rcpt_bounce",
    "disconnect": "disconnect",
    "connect421": "connect_421",
    "slow": "slow",
    "slow-delay": "slow_delay",
}
SPEC_HELP = (
    "comma-separated KEY=VALUE: seed=N; rcpt4xx=P (share of recipients deferred with "
    "451 4.7.1 on their first rcpt4xx-attempts=N attempts, default 1); rcpt5xx=P (share "
    "bounced with 550 5.1.1 on every attempt); disconnect=P (share of messages after whose "
    "final dot or last BDAT chunk the connection drops unanswered, the message stored); "
    "connect421=P (share of connections refused with 421 at the greeting); slow=P (share "
    "of replies delayed) with slow-delay=LO-HI seconds (uniform, default 0.05-0.25). "
    "Decisions depend on the seed and (recipient, attempt), so runs are reproducible. "
    "Example: seed=7,rcpt4xx=0.1,rcpt5xx=0.05,disconnect=0.02,connect421=0.01,slow=0.05"
)


DEFER_REPLY = Reply.of(451, "4.7.1 Try again later (injected fault)")
BOUNCE_REPLY = Reply.of(550, "5.1.1 No such user (injected fault)")
CONNECT_REPLY = Reply.of(421, "4.3.2 Service not available (injected fault)")


def _unit(seed: int, *parts: object) -> float:
    """A number in [0, 1) fixed by the seed and ``parts`` (a keyed hash, not a PRNG)."""
    key = "\x1f".join([str(seed), *(str(p) for p in parts)]).encode()
    digest = hashlib.blake2b(key, digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def _probability(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a probability between 0 and 1, not {value}")


@dataclass(frozen=True, slots=True)
class FaultPlan:
    """Seeded faults for :class:`FaultSink`; probabilities are between 0 and 1."""

    seed: int = 0
    rcpt_defer: float = 0.0
    """Share of recipients answered :attr:`defer_reply` on their first
    :attr:`defer_attempts` attempts (then accepted)."""
    defer_attempts: int = 1
    rcpt_bounce: float = 0.0
    """Share of recipients answered :attr:`bounce_reply` on every attempt."""
    disconnect: float = 0.0
    """Share of (recipient, attempt) for which, when that recipient is the message's first
    accepted one, the connection drops right after the final dot or last BDAT chunk: the
    message is stored and counted as received, its reply never sent."""
    connect_421: float = 0.0
    """Share of connections (by id) greeted with :attr:`connect_reply` and closed."""
    slow: float = 0.0
    """Share of replies (by connection id and reply index) delayed."""
    slow_delay: tuple[float, float] = (0.05, 0.25)
    """A delayed reply waits a time drawn uniformly from this range, in seconds."""
    defer_reply: Reply = DEFER_REPLY
    bounce_reply: Reply = BOUNCE_REPLY
    connect_reply: Reply = CONNECT_REPLY

    def __post_init__(self) -> None:
        for name in ("rcpt_defer", "rcpt_bounce", "disconnect", "connect_421", "slow"):
            _probability(name, getattr(self, name))
        if self.rcpt_defer + self.rcpt_bounce > 1.0:
            raise ValueError("rcpt_defer + rcpt_bounce must not exceed 1")
        if self.defer_attempts < 1:
            raise ValueError("defer_attempts must be at least 1")
        low, high = self.slow_delay
        if not 0.0 <= low <= high:
            raise ValueError(f"slow_delay must be (low, high) with 0 <= low <= high: {low, high}")
        if not self.defer_reply.is_transient or not self.bounce_reply.is_permanent:
            raise ValueError("defer_reply must be 4xx and bounce_reply 5xx")

    # -- the decisions ---------------------------------------------------------------

    def kind(self, recipient: str) -> Literal["ok", "defer", "bounce"]:
        """What the plan does to ``recipient`` at RCPT (``defer``: on its first
        :attr:`defer_attempts` attempts only)."""
        u = _unit(self.seed, "rcpt", recipient.lower())
        if u < self.rcpt_bounce:
            return "bounce"
        if u < self.rcpt_bounce + self.rcpt_defer:
            return "defer"
        return "ok"

    def rcpt_reply(self, recipient: str, attempt: int) -> Reply | None:
        """The injected reply to RCPT on ``attempt`` (1, 2, …), or None for no fault."""
        kind = self.kind(recipient)
        if kind == "bounce":
            return self.bounce_reply
        if kind == "defer" and attempt <= self.defer_attempts:
            return self.defer_reply
        return None

    def disconnects(self, recipient: str, attempt: int) -> bool:
        """Whether a message whose first accepted recipient is ``recipient``, on its
        ``attempt``, ends with the connection dropped (the message stored)."""
        return _unit(self.seed, "disconnect", recipient.lower(), attempt) < self.disconnect

    def outcome(self, recipient: str, attempt: int) -> Outcome:
        """What happens to a one-recipient message on ``attempt``, if it gets that far
        (a 421 at the greeting or a late reply is decided per connection)."""
        reply = self.rcpt_reply(recipient, attempt)
        if reply is not None:
            return "bounce" if reply.is_permanent else "defer"
        return "disconnect" if self.disconnects(recipient, attempt) else "accept"

    def refuses_connection(self, connection: int) -> bool:
        """Whether connection number ``connection`` (1, 2, …) is greeted with 421."""
        return _unit(self.seed, "connect", connection) < self.connect_421

    def reply_delay(self, connection: int, index: int) -> float:
        """Seconds to wait before reply number ``index`` (0: the greeting) on a
        connection; 0.0 for most."""
        if self.slow <= 0.0 or _unit(self.seed, "slow", connection, index) >= self.slow:
            return 0.0
        low, high = self.slow_delay
        return low + (high - low) * _unit(self.seed, "delay", connection, index)

    # -- text form -------------------------------------------------------------------

    @classmethod
    def parse(cls, spec: str) -> FaultPlan:
        """``"seed=7,rcpt4xx=0.1,rcpt5xx=0.05,disconnect=0.02,connect421=0.01,slow=0.05,
        slow-delay=0.01-0.2"`` (see :data:`SPEC_HELP`); raises ValueError."""
        values: dict[str, Any] = {}
        for item in spec.replace(" ", "").split(","):
            if not item:
                continue
            key, eq, value = item.partition("=")
            if not eq or key not in _SPEC_KEYS:
                known = ", ".join(_SPEC_KEYS)
                raise ValueError(f"fault {item!r}: expected KEY=VALUE with KEY one of {known}")
            name = _SPEC_KEYS[key]
            try:
                if name in ("seed", "defer_attempts"):
                    values[name] = int(value)
                elif name == "slow_delay":
                    low, dash, high = value.partition("-")
                    values[name] = (float(low), float(high if dash else low))
                else:
                    values[name] = float(value)
            except ValueError:
                raise ValueError(f"fault {item!r}: {value!r} is not a number") from None
        return cls(**values)

    def describe(self) -> str:
        parts = [f"seed={self.seed}"]
        for key, name in _SPEC_KEYS.items():
            value = getattr(self, name)
            if name == "seed" or (name == "defer_attempts" and not self.rcpt_defer):
                continue
            if name == "slow_delay":
                if self.slow:
                    parts.append(f"{key}={value[0]:g}-{value[1]:g}")
            elif value:
                parts.append(f"{key}={value:g}")
        return ",".join(parts)


# -- the log -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RcptRecord:
    """One RCPT command: the address (lower-cased), its attempt number, the reply and
    when it was given (``time.time()``)."""

    address: str
    attempt: int
    reply: Reply
    time: float


@dataclass(frozen=True, slots=True)
class TransactionRecord:
    """One mail transaction: from an accepted MAIL to its end.

    ``reply`` is the reply that ended it: to the final dot or last BDAT chunk, or the
    refusal of DATA or a BDAT chunk (e.g. 554 when no recipient was accepted); None when
    it ended without one (RSET, QUIT, a new EHLO, the client leaving, or a ``dropped``
    connection). ``stored``: the message was received (and counted in
    :attr:`SinkLog.received`); ``dropped``: the plan closed the connection instead of
    answering it. Times are ``time.time()``.
    """

    connection: int
    client: str
    started: float
    ended: float
    mail_from: str
    recipients: tuple[RcptRecord, ...]
    reply: Reply | None
    stored: bool
    dropped: bool
    chunked: bool

    @property
    def time(self) -> float:
        """When the transaction ended."""
        return self.ended

    @property
    def accepted(self) -> tuple[str, ...]:
        """The recipients whose RCPT got a 2xx."""
        return tuple(r.address for r in self.recipients if r.reply.is_positive_completion)


@dataclass(frozen=True, slots=True)
class ConnectionRecord:
    """One connection, written to the log when it ends.

    ``refused``: greeted with a 421 by the plan. ``plaintext`` / ``over_tls``: the bytes
    received before and after STARTTLS (only with ``record_bytes``)."""

    id: int
    client: str
    opened: float
    closed: float
    refused: bool
    tls: bool
    transactions: int
    plaintext: bytes = field(default=b"", repr=False)
    over_tls: bytes = field(default=b"", repr=False)


@dataclass
class SinkLog:
    """What a :class:`FaultSink` saw. Recipient keys are lower-cased addresses."""

    transactions: list[TransactionRecord] = field(default_factory=list)
    connections: list[ConnectionRecord] = field(default_factory=list)
    """Closed connections, in the order they closed."""
    received: Counter[str] = field(default_factory=Counter)
    """Messages stored per recipient (a duplicate shows as 2)."""
    attempts: Counter[str] = field(default_factory=Counter)
    """RCPT commands per recipient."""
    concurrent: int = 0
    """Connections open now."""
    max_concurrent: int = 0
    concurrent_per_client: Counter[str] = field(default_factory=Counter)
    max_concurrent_per_client: dict[str, int] = field(default_factory=dict)
    refused_connections: int = 0
    dropped: int = 0
    """Messages stored whose reply was never sent (the ``disconnect`` fault)."""

    @property
    def messages(self) -> int:
        """Messages stored (a message to n recipients counts once)."""
        return sum(1 for t in self.transactions if t.stored)

    def summary(self) -> dict[str, Any]:
        return {
            "messages": self.messages,
            "recipients_received": sum(self.received.values()),
            "distinct_recipients_received": len(self.received),
            "rcpt_attempts": sum(self.attempts.values()),
            "transactions": len(self.transactions),
            "connections": len(self.connections) + self.concurrent,
            "refused_connections": self.refused_connections,
            "dropped_after_message": self.dropped,
            "max_concurrent": self.max_concurrent,
            "max_concurrent_per_client": dict(self.max_concurrent_per_client),
        }


def _reply_json(reply: Reply) -> dict[str, Any]:
    return {"code": reply.code, "text": reply.text}


def transaction_json(t: TransactionRecord) -> dict[str, Any]:
    """``t`` as the JSON object the ``--log`` file holds (``"type": "transaction"``)."""
    return {
        "type": "transaction",
        "connection": t.connection,
        "client": t.client,
        "started": t.started,
        "ended": t.ended,
        "mail_from": t.mail_from,
        "recipients": [
            {"address": r.address, "attempt": r.attempt, "time": r.time, **_reply_json(r.reply)}
            for r in t.recipients
        ],
        "reply": None if t.reply is None else _reply_json(t.reply),
        "stored": t.stored,
        "dropped": t.dropped,
        "chunked": t.chunked,
    }


def connection_json(c: ConnectionRecord) -> dict[str, Any]:
    """``c`` as the JSON object the ``--log`` file holds (``"type": "connection"``)."""
    return {
        "type": "connection",
        "id": c.id,
        "client": c.client,
        "opened": c.opened,
        "closed": c.closed,
        "refused": c.refused,
        "tls": c.tls,
        "transactions": c.transactions,
    }


# -- the sink ----------------------------------------------------------------------------


@dataclass(eq=False)
class _Transaction:
    started: float
    mail_from: str
    recipients: list[RcptRecord] = field(default_factory=list)
    chunked: bool = False


@dataclass(eq=False)
class _State:
    refused: bool = False
    transactions: int = 0
    open: _Transaction | None = None
    rcpt: RcptRecord | None = None  # the RCPT being answered
    plaintext: bytearray = field(default_factory=bytearray)
    over_tls: bytearray = field(default_factory=bytearray)


class FaultSink(Sink):
    """A :class:`Sink` that injects the faults of ``plan`` and keeps a :class:`SinkLog`.

    ``record_bytes`` keeps every byte each connection received (in its
    :class:`ConnectionRecord`); ``log_file`` gets each record as a JSON line as it is made
    (:func:`transaction_json`, :func:`connection_json`). Other options as for
    :class:`Sink` (``rules`` apply to recipients the plan leaves alone).
    """

    def __init__(
        self,
        plan: FaultPlan | None = None,
        *,
        record_bytes: bool = False,
        log_file: IO[str] | None = None,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        self.plan = plan if plan is not None else FaultPlan()
        self.log = SinkLog()
        self.record_bytes = record_bytes
        self.log_file = log_file
        self._states: dict[int, _State] = {}
        self._idle: anyio.Event | None = None

    async def wait_idle(self) -> None:
        """Return once no connection is open (each one's records are then in the log)."""
        while self.log.concurrent:
            if self._idle is None:
                self._idle = anyio.Event()
            await self._idle.wait()

    # -- connections -----------------------------------------------------------------

    def _opened(self, conn: SinkConnection) -> None:
        log = self.log
        self._states[conn.id] = _State()
        log.concurrent += 1
        log.max_concurrent = max(log.max_concurrent, log.concurrent)
        log.concurrent_per_client[conn.client] += 1
        now = log.concurrent_per_client[conn.client]
        if now > log.max_concurrent_per_client.get(conn.client, 0):
            log.max_concurrent_per_client[conn.client] = now

    def _closed(self, conn: SinkConnection) -> None:
        log = self.log
        state = self._states.pop(conn.id)
        self._end(conn, state, None)
        log.concurrent -= 1
        log.concurrent_per_client[conn.client] -= 1
        if not log.concurrent_per_client[conn.client]:
            del log.concurrent_per_client[conn.client]
        record = ConnectionRecord(
            conn.id,
            conn.client,
            conn.opened,
            time.time(),
            state.refused,
            conn.proto.tls_active,
            state.transactions,
            bytes(state.plaintext),
            bytes(state.over_tls),
        )
        log.connections.append(record)
        self._write(connection_json(record))
        if not log.concurrent and self._idle is not None:
            self._idle.set()
            self._idle = None

    def _received(self, conn: SinkConnection, data: bytes) -> None:
        if self.record_bytes:
            state = self._states[conn.id]
            (state.over_tls if conn.proto.tls_active else state.plaintext).extend(data)

    # -- replies ---------------------------------------------------------------------

    async def _delay(self, conn: SinkConnection) -> None:
        seconds = self.plan.reply_delay(conn.id, conn.replies)
        if seconds > 0:
            await anyio.sleep(seconds)

    async def _greet(self, conn: SinkConnection) -> Reply:
        await self._delay(conn)
        if self.plan.refuses_connection(conn.id):
            self._states[conn.id].refused = True
            self.log.refused_connections += 1
            return self.plan.connect_reply
        return await super()._greet(conn)

    async def _answer(self, conn: SinkConnection, event: ServerEvent) -> Reply | None:
        await self._delay(conn)
        state = self._states[conn.id]
        if isinstance(event, RcptTo):
            address = event.address.lower()
            self.log.attempts[address] += 1
            attempt = self.log.attempts[address]
            reply = self.plan.rcpt_reply(address, attempt)
            if reply is None:
                reply = await self._reply(conn.proto, event)
            if state.open is not None:
                state.open.recipients.append(RcptRecord(address, attempt, reply, time.time()))
            return reply
        if isinstance(event, MessageReceived) and state.open is not None:
            first = next((r for r in state.open.recipients if r.reply.is_positive_completion), None)
            state.open.chunked = event.chunked
            if first is not None and self.plan.disconnects(first.address, first.attempt):
                await self._reply(conn.proto, event)  # stored and counted, as if answered
                self._end(conn, state, None, stored=True, dropped=True)
                return DROP
        reply = await self._reply(conn.proto, event)
        self._track(conn, state, event, reply)
        return reply

    def _track(self, conn: SinkConnection, state: _State, event: ServerEvent, reply: Reply) -> None:
        ok = reply.is_positive_completion
        match event:
            case MailFrom(address=address) if ok:
                self._end(conn, state, None)
                state.open = _Transaction(time.time(), address)
            case MessageReceived():
                self._end(conn, state, reply, stored=ok)
            case CommandRejected(command="DATA" | "BDAT"):
                self._end(conn, state, reply)
            case DataStart() | ChunkReceived() if not reply.is_positive:
                self._end(conn, state, reply)
            case ChunkReceived():
                if state.open is not None:
                    state.open.chunked = True
            case ResetRequested() | QuitRequested() | StartTlsRequested() | Hello():
                self._end(conn, state, None)
            case _:
                pass

    def _end(
        self,
        conn: SinkConnection,
        state: _State,
        reply: Reply | None,
        *,
        stored: bool = False,
        dropped: bool = False,
    ) -> None:
        txn = state.open
        if txn is None:
            return
        state.open = None
        state.transactions += 1
        record = TransactionRecord(
            conn.id,
            conn.client,
            txn.started,
            time.time(),
            txn.mail_from,
            tuple(txn.recipients),
            reply,
            stored,
            dropped,
            txn.chunked,
        )
        log = self.log
        log.transactions.append(record)
        if stored:
            log.received.update(record.accepted)
        if dropped:
            log.dropped += 1
        self._write(transaction_json(record))

    def _write(self, obj: dict[str, Any]) -> None:
        if self.log_file is not None:
            self.log_file.write(json.dumps(obj, separators=(",", ":")) + "\n")

    def summary(self) -> str:
        log = self.log
        return (
            f"{super().summary()}; {log.refused_connections} refused at connect, "
            f"{log.dropped} dropped after the message, max {log.max_concurrent} concurrent"
        )


@asynccontextmanager
async def fault_sink(
    plan: FaultPlan | None = None, *, host: str = "127.0.0.1", **options: Any
) -> AsyncIterator[FaultSink]:
    """A :class:`FaultSink` serving on a free port of ``host`` (``sink.port``) for the
    duration of the block (``options`` as for :class:`FaultSink`); its
    :attr:`~FaultSink.log` stays readable afterwards."""
    sink = FaultSink(plan, host=host, port=0, **options)
    async with anyio.create_task_group() as tg:
        sink.port = await tg.start(sink.serve)
        try:
            yield sink
        finally:
            tg.cancel_scope.cancel()


def write_summary(log: SinkLog, path: Path) -> None:
    """Append the log's summary as a last JSON line (``"type": "summary"``) to ``path``,
    with the per-recipient counters."""
    summary = {"type": "summary", **log.summary()}
    summary["received"] = dict(log.received)
    summary["attempts"] = dict(log.attempts)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(summary, separators=(",", ":")) + "\n")


__all__ = [
    "SPEC_HELP",
    "ConnectionRecord",
    "FaultPlan",
    "FaultSink",
    "Outcome",
    "RcptRecord",
    "SinkLog",
    "TransactionRecord",
    "connection_json",
    "fault_sink",
    "transaction_json",
    "write_summary",
]
