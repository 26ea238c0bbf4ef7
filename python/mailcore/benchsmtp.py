"""``mailcore bench smtp``: measure a relay (or a local sink) at several connection counts
and recommend ``smtp_connections``.

For each connection count, that many :class:`~mailcore.smtp.SmtpConnection` sessions are
opened (greeting, EHLO, STARTTLS and AUTH as the URL says), then pre-rendered messages
of the given size are sent through them — one recipient each, each connection reused
for message after message and, when the server offers PIPELINING, up to
``--pipeline-depth`` messages pipelined per round trip, as the dispatcher does — for a fixed
number of messages or a fixed time. Per setting: messages/s accepted (250 after the final
dot), latency of each message (MAIL to the reply after the dot), and every failure by
reply code or by what went wrong. The recommendation is the smallest connection count
within 5 % of the best throughput among the settings with the fewest errors.

Safe by default: a relay that is not on loopback gets mail only for an explicit ``--to``.
"""

from __future__ import annotations

import ipaddress
import math
import os
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from email.utils import formatdate
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import anyio
import msgspec
from rich.console import Group
from rich.table import Table
from rich.text import Text

from .config import DEFAULT_PIPELINE_DEPTH
from .smtp import (
    RelayConfig,
    SendOutcome,
    SmtpConnection,
    SmtpConnectionLost,
    SmtpError,
    SmtpReplyError,
    SmtpTimeout,
    TlsMode,
)

DEFAULT_MESSAGES = 1_000
DEFAULT_FROM = "bench@mailcore.invalid"
LOOPBACK_TO = "sink@mailcore.invalid"
WITHIN = 0.05  # a setting within 5 % of the best throughput counts as as good
ERROR_TOLERANCE = 0.001  # error rates this close (0.1 percentage point) count as equal
CONNECT_BACKOFF = 0.2  # seconds a worker waits after a failed connection attempt
_SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1024, "kib": 1024, "m": 1 << 20, "mb": 1 << 20}


class BenchUsageError(ValueError):
    """The command line asks for something unsafe or impossible; nothing was sent."""


class SettingResult(msgspec.Struct, kw_only=True, frozen=True):
    """One connection count's run."""

    connections: int
    attempted: int  # messages taken from the budget (a failed connection attempt uses one)
    delivered: int  # accepted: 250 after the final dot
    failed: int  # attempted - delivered
    errors_by_code: dict[str, int]  # "451", "550", "connection lost", "timeout", ...
    seconds: float  # from the first message to the end of the last one
    connect_seconds: float  # opening the connections, before the timed part
    reconnects: int  # connections opened again after one broke
    messages_per_second: float  # delivered / seconds
    cpu_us_per_message: float | None  # this process's CPU over the timed part, per attempt
    latency_p50_ms: float | None
    latency_p99_ms: float | None

    @property
    def error_rate(self) -> float:
        return self.failed / self.attempted if self.attempted else 1.0


class BenchReport(msgspec.Struct, kw_only=True, frozen=True):
    relay: str  # the URL without credentials
    tls: str
    tls_active: bool | None  # on the first connection that opened
    extensions: list[str]  # EHLO keywords of the first connection that opened
    size: int  # bytes per message as sent (before dot-stuffing)
    mail_from: str
    rcpt_to: str
    messages: int | None  # per setting, or None with a duration
    duration: float | None
    pipeline_depth: int  # messages per round trip at most (1: one after the other)
    settings: list[SettingResult]
    recommended: int | None  # smtp_connections to use; None when nothing got through
    reason: str


@dataclass(frozen=True)
class BenchOptions:
    url: str
    connections: tuple[int, ...]
    size: int
    messages: int | None = None
    duration: float | None = None
    mail_from: str = DEFAULT_FROM
    rcpt_to: str | None = None
    tls: TlsMode | None = None
    ca_file: str | None = None
    pipeline_depth: int = DEFAULT_PIPELINE_DEPTH  # the dispatcher's (Settings.pipeline_depth)
    pipeline_bytes: int = 256 * 1024

    def __post_init__(self) -> None:
        if not self.connections or min(self.connections) < 1:
            raise BenchUsageError("--connections needs positive counts, e.g. 1,8,32,64")
        if self.pipeline_depth < 1:
            raise BenchUsageError("--pipeline-depth must be at least 1")
        if self.messages is not None and self.duration is not None:
            raise BenchUsageError("give --messages or --duration, not both")
        if self.messages is not None and self.messages < 1:
            raise BenchUsageError("--messages must be at least 1")
        if self.duration is not None and not self.duration > 0:
            raise BenchUsageError("--duration must be positive")

    @property
    def messages_per_setting(self) -> int:
        """With no duration: --messages, or the default."""
        return self.messages if self.messages is not None else DEFAULT_MESSAGES


# -- inputs -----------------------------------------------------------------------------


def parse_size(text: str) -> int:
    """``10k`` → 10240 bytes (k = 1024, m = 1024²); a plain number is bytes."""
    raw = text.strip().lower()
    number = raw.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = raw[len(number) :].strip()
    if unit not in _SIZE_UNITS or not number:
        raise BenchUsageError(f"size {text!r}: expected bytes, or a number with k or m (10k)")
    try:
        value = float(number)
    except ValueError:
        raise BenchUsageError(f"size {text!r} is not a number") from None
    size = int(value * _SIZE_UNITS[unit])
    if size < 1:
        raise BenchUsageError("the message size must be positive")
    return size


def parse_connections(text: str) -> tuple[int, ...]:
    """``1,8,32,64`` → ``(1, 8, 32, 64)`` (sorted, duplicates dropped)."""
    try:
        counts = {int(part) for part in text.split(",") if part.strip()}
    except ValueError:
        raise BenchUsageError(f"--connections {text!r}: expected numbers like 1,8,32,64") from None
    if not counts or min(counts) < 1:
        raise BenchUsageError("--connections needs positive counts, e.g. 1,8,32,64")
    return tuple(sorted(counts))


def parse_tls(text: str | None) -> TlsMode | None:
    """``--tls``: one of the relay's TLS modes, or None to keep the URL's."""
    if text is None:
        return None
    modes: tuple[TlsMode, ...] = ("none", "opportunistic", "required", "implicit")
    for mode in modes:
        if text == mode:
            return mode
    raise BenchUsageError(f"--tls must be one of {', '.join(modes)}, not {text!r}")


def is_loopback(host: str) -> bool:
    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def relay_config(url: str, tls: TlsMode | None = None) -> RelayConfig:
    """The relay from the URL, with ``tls`` (when given) replacing the URL's TLS mode."""
    if tls is not None:
        parts = urlsplit(url)
        query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "tls"]
        url = urlunsplit(parts._replace(query=urlencode([*query, ("tls", tls)])))
    try:
        return RelayConfig.from_url(url)
    except ValueError as exc:
        raise BenchUsageError(str(exc)) from None


def redacted(url: str) -> str:
    """The URL without user and password."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit(parts._replace(netloc=netloc))


def recipient_for(options: BenchOptions, config: RelayConfig) -> str:
    """The RCPT TO address; refuses to make one up for a relay that is not on loopback."""
    if options.rcpt_to:
        return options.rcpt_to
    if is_loopback(config.host):
        return LOOPBACK_TO
    raise BenchUsageError(
        f"{config.host} is not on loopback: give --to ADDRESS, a mailbox you own that may "
        "receive every test message (nothing was sent)"
    )


class MessageFactory:
    """Pre-rendered messages of exactly ``size`` bytes: one body, and per message only a
    Message-ID line put in front of it."""

    def __init__(self, size: int, mail_from: str, rcpt_to: str) -> None:
        self.size = size
        self._run = os.urandom(6).hex()
        self._count = 0
        head = (
            f"From: mailcore bench <{mail_from}>\r\n"
            f"To: <{rcpt_to}>\r\n"
            "Subject: mailcore bench smtp (test message, discard)\r\n"
            f"Date: {formatdate(localtime=False)}\r\n"
            "MIME-Version: 1.0\r\n"
            "Content-Type: text/plain; charset=us-ascii\r\n"
            "Content-Transfer-Encoding: 7bit\r\n"
            "X-Mailcore-Bench: 1\r\n"
            "\r\n"
        ).encode()
        # The Message-ID line's length is fixed: "<" 12 digits "." run "@mailcore.bench>".
        id_line = len(self._id_line(0))
        room = size - len(head) - id_line
        if room < 2:
            raise BenchUsageError(
                f"a message of {size} bytes is too small: headers take {len(head) + id_line}"
            )
        line = (b"mailcore bench smtp filler text, safe to discard. " * 2)[:76] + b"\r\n"
        lines, rest = divmod(room, len(line))
        body = line * lines
        if rest == 1:  # no room for a line of its own: lengthen the last one
            body = body[:-2] + b"x\r\n"
        elif rest:
            body += b"x" * (rest - 2) + b"\r\n"
        self._tail = head + body
        assert len(self._tail) + id_line == size

    def _id_line(self, n: int) -> bytes:
        return b"Message-ID: <%012d.%s@mailcore.bench>\r\n" % (n, self._run.encode())

    def __call__(self) -> bytes:
        self._count += 1
        return self._id_line(self._count) + self._tail


# -- running ----------------------------------------------------------------------------


@dataclass
class _Tally:
    budget: float  # messages left to take (inf with a duration)
    deadline: float  # time.perf_counter() after which no message starts (inf with a count)
    attempted: int = 0
    delivered: int = 0
    reconnects: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    ended: float = 0.0
    first_connection: SmtpConnection | None = None

    def take(self, most: int = 1) -> int:
        """Up to ``most`` messages from the budget (0: the budget or the time is up)."""
        if self.budget <= 0 or time.perf_counter() >= self.deadline:
            return 0
        n = int(min(most, self.budget))
        self.budget -= n
        self.attempted += n
        return n

    def error(self, key: str) -> None:
        self.errors[key] = self.errors.get(key, 0) + 1


def _error_key(exc: SmtpError) -> str:
    if isinstance(exc, SmtpReplyError):
        return f"{exc.reply.code} ({exc.phase})"
    if isinstance(exc, SmtpTimeout):
        return f"timeout ({exc.phase})"
    if isinstance(exc, SmtpConnectionLost):
        return f"connection lost ({exc.phase})"
    return type(exc).__name__


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of unsorted ``values`` (not empty)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


class _Worker:
    def __init__(
        self,
        config: RelayConfig,
        tls_context: ssl.SSLContext | None,
        tally: _Tally,
        messages: MessageFactory,
        mail_from: str,
        rcpt_to: str,
        depth: int = 1,
        depth_bytes: int = 256 * 1024,
    ) -> None:
        self.config, self.tls_context, self.tally = config, tls_context, tally
        self.messages, self.mail_from, self.rcpt_to = messages, mail_from, rcpt_to
        self.depth, self.depth_bytes = depth, depth_bytes
        self.conn: SmtpConnection | None = None
        self.connect_error: str | None = None

    async def connect(self) -> None:
        try:
            self.conn = await SmtpConnection.open(self.config, tls_context=self.tls_context)
        except SmtpError as exc:
            self.conn, self.connect_error = None, _error_key(exc)
        else:
            self.connect_error = None
            if self.tally.first_connection is None:
                self.tally.first_connection = self.conn

    async def run(self, start: anyio.Event) -> None:
        tally = self.tally
        await start.wait()
        try:
            while tally.budget > 0 and time.perf_counter() < tally.deadline:
                if self.conn is not None and not self.conn.usable:  # it broke: reopen
                    tally.reconnects += 1
                    await self._drop()
                    await self.connect()
                elif self.conn is None and self.connect_error is None:
                    await self.connect()  # the last attempt failed: try again
                if self.conn is None:
                    # A failed attempt costs one message of the budget (the messages are
                    # taken once there is a connection to send them on).
                    if not tally.take(1):
                        break
                    tally.error(f"connect: {self.connect_error}")
                    self.connect_error = None
                    await anyio.sleep(CONNECT_BACKOFF)
                    continue
                n = tally.take(self.depth)
                if not n:
                    break
                if n == 1:
                    await self._send(self.conn)
                else:
                    await self._send_many(self.conn, n)
        finally:
            tally.ended = max(tally.ended, time.perf_counter())
            await self._drop()

    async def _send(self, conn: SmtpConnection) -> None:
        tally = self.tally
        content = self.messages()
        started = time.perf_counter()
        try:
            outcome = await conn.send(self.mail_from, [self.rcpt_to], content)
        except SmtpError as exc:
            tally.error(_error_key(exc))
            return
        tally.latencies.append(time.perf_counter() - started)
        self._count(outcome)

    async def _send_many(self, conn: SmtpConnection, n: int) -> None:
        """``n`` messages pipelined (``send_many``); each one's latency is the pipeline's,
        from its first command to the last reply, as a message in a dispatcher batch sees."""
        tally = self.tally
        batch = [(self.mail_from, [self.rcpt_to], self.messages()) for _ in range(n)]
        started = time.perf_counter()
        outcomes = await conn.send_many(batch, max_messages=n, max_bytes=self.depth_bytes)
        took = time.perf_counter() - started
        for outcome in outcomes:
            if isinstance(outcome, SmtpError):
                tally.error(_error_key(outcome))
            else:
                tally.latencies.append(took)
                self._count(outcome)

    def _count(self, outcome: SendOutcome) -> None:
        tally = self.tally
        if outcome.status(self.rcpt_to) == "delivered":
            tally.delivered += 1
            return
        refusal = next(
            r
            for r in (outcome.mail, outcome.reply_for(self.rcpt_to), outcome.data)
            if r is None or not r.is_positive
        )
        tally.error("no reply to DATA" if refusal is None else str(refusal.code))

    async def _drop(self) -> None:
        if self.conn is not None:
            with anyio.CancelScope(shield=True):
                await self.conn.aclose()
            self.conn = None


async def run_setting(
    options: BenchOptions,
    config: RelayConfig,
    connections: int,
    rcpt_to: str,
    tls_context: ssl.SSLContext | None = None,
    on_first: Callable[[SmtpConnection], None] | None = None,
) -> SettingResult:
    """Open ``connections`` sessions, then send through all of them until the budget (or
    the time) is used up."""
    messages = MessageFactory(options.size, options.mail_from, rcpt_to)
    budget = math.inf if options.duration is not None else float(options.messages_per_setting)
    tally = _Tally(budget=budget, deadline=math.inf)
    workers = [
        _Worker(
            config,
            tls_context,
            tally,
            messages,
            options.mail_from,
            rcpt_to,
            options.pipeline_depth,
            options.pipeline_bytes,
        )
        for _ in range(connections)
    ]
    opened = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for w in workers:
            tg.start_soon(w.connect)
    connect_seconds = time.perf_counter() - opened
    if tally.first_connection is not None and on_first is not None:
        on_first(tally.first_connection)
    start = anyio.Event()
    cpu0 = time.process_time()
    async with anyio.create_task_group() as tg:
        for w in workers:
            tg.start_soon(w.run, start)
        began = time.perf_counter()
        if options.duration is not None:
            tally.deadline = began + options.duration
        start.set()
    cpu = time.process_time() - cpu0
    seconds = max(tally.ended - began, 1e-9)
    lat = tally.latencies
    return SettingResult(
        connections=connections,
        attempted=tally.attempted,
        delivered=tally.delivered,
        failed=tally.attempted - tally.delivered,
        errors_by_code=dict(sorted(tally.errors.items())),
        seconds=round(seconds, 6),
        connect_seconds=round(connect_seconds, 6),
        reconnects=tally.reconnects,
        messages_per_second=round(tally.delivered / seconds, 3),
        cpu_us_per_message=round(1e6 * cpu / tally.attempted, 1) if tally.attempted else None,
        latency_p50_ms=round(percentile(lat, 0.50) * 1000, 3) if lat else None,
        latency_p99_ms=round(percentile(lat, 0.99) * 1000, 3) if lat else None,
    )


def recommend(results: Sequence[SettingResult]) -> tuple[int | None, str]:
    """The smallest connection count within 5 % of the best throughput, among the
    settings whose error rate is the lowest seen (within 0.1 percentage point)."""
    useful = [r for r in results if r.delivered > 0]
    if not useful:
        return None, "no setting got a message accepted: check the URL, --to and the errors"
    fewest = min(r.error_rate for r in useful)
    clean = [r for r in useful if r.error_rate <= fewest + ERROR_TOLERANCE]
    best = max(clean, key=lambda r: r.messages_per_second)
    pick = min(
        (r for r in clean if r.messages_per_second >= (1 - WITHIN) * best.messages_per_second),
        key=lambda r: r.connections,
    )
    dropped = [r.connections for r in useful if r not in clean]
    reason = (
        f"{pick.connections} connection{'s' if pick.connections != 1 else ''}: "
        f"{pick.messages_per_second:,.0f} msg/s"
    )
    if pick is best:
        reason += ", the best throughput measured"
    else:
        reason += (
            f", within {WITHIN:.0%} of the best ({best.messages_per_second:,.0f} msg/s with "
            f"{best.connections}) with fewer connections"
        )
    if dropped:
        reason += f"; not considered for their higher error rate: {dropped}"
    return pick.connections, reason


async def run_bench(
    options: BenchOptions,
    *,
    tls_context: ssl.SSLContext | None = None,
    progress: Callable[[SettingResult], None] | None = None,
) -> BenchReport:
    """Every setting in turn (one after the other, never overlapping), then the report."""
    config = relay_config(options.url, options.tls)
    rcpt_to = recipient_for(options, config)
    if tls_context is None and options.ca_file is not None:
        tls_context = ssl.create_default_context(cafile=options.ca_file)
    first: list[SmtpConnection] = []
    results = []
    for n in options.connections:
        result = await run_setting(options, config, n, rcpt_to, tls_context, first.append)
        results.append(result)
        if progress is not None:
            progress(result)
    recommended, reason = recommend(results)
    seen = first[0] if first else None
    ehlo = seen.ehlo if seen is not None else None
    return BenchReport(
        relay=redacted(options.url),
        tls=config.tls,
        tls_active=seen.tls_active if seen is not None else None,
        extensions=sorted(ehlo.extensions) if ehlo is not None else [],
        size=options.size,
        mail_from=options.mail_from,
        rcpt_to=rcpt_to,
        messages=None if options.duration is not None else options.messages_per_setting,
        duration=options.duration,
        pipeline_depth=(
            options.pipeline_depth if ehlo is None or ehlo.supports("PIPELINING") else 1
        ),
        settings=results,
        recommended=recommended,
        reason=reason,
    )


# -- output -----------------------------------------------------------------------------


def render_table(report: BenchReport) -> Group:
    """A rich renderable: the settings' table with the recommendation under it."""
    budget = (
        f"{report.messages:,} messages per setting"
        if report.messages is not None
        else f"{report.duration:g} s per setting"
    )
    depth = (
        f"up to {report.pipeline_depth} pipelined per round trip"
        if report.pipeline_depth > 1
        else "one per round trip"
    )
    table = Table(
        title=f"mailcore bench smtp → {report.relay} ({report.size:,}-byte messages, {depth}, "
        f"{budget})",
        title_justify="left",
    )
    columns = ("connections", "sent", "accepted", "msg/s", "p50 ms", "p99 ms", "CPU µs/msg")
    for name in (*columns, "errors"):
        if name == "errors":
            table.add_column(name, justify="left")
        else:
            table.add_column(name, justify="right", no_wrap=True)
    for r in report.settings:
        errors = ", ".join(f"{k}: {v:,}" for k, v in r.errors_by_code.items()) or "–"
        table.add_row(
            str(r.connections),
            f"{r.attempted:,}",
            f"{r.delivered:,}",
            f"{r.messages_per_second:,.0f}",
            "–" if r.latency_p50_ms is None else f"{r.latency_p50_ms:,.1f}",
            "–" if r.latency_p99_ms is None else f"{r.latency_p99_ms:,.1f}",
            "–" if r.cpu_us_per_message is None else f"{r.cpu_us_per_message:,.0f}",
            errors,
        )
    features = ", ".join(report.extensions) or "none seen"
    lines = [
        Text(f"TLS {report.tls} (active: {report.tls_active}); server extensions: {features}"),
    ]
    if report.recommended is not None:
        lines += [
            Text(f"Recommended: {report.reason}.", style="bold"),
            Text(f"  mailcore.toml:  smtp_connections = {report.recommended}"),
            Text(f"  environment:    MAILCORE_SMTP_CONNECTIONS={report.recommended}"),
        ]
    else:
        lines.append(Text(f"No recommendation: {report.reason}.", style="bold red"))
    return Group(table, *lines)


__all__ = [
    "DEFAULT_MESSAGES",
    "BenchOptions",
    "BenchReport",
    "BenchUsageError",
    "MessageFactory",
    "SettingResult",
    "is_loopback",
    "parse_connections",
    "parse_size",
    "parse_tls",
    "recipient_for",
    "recommend",
    "redacted",
    "relay_config",
    "render_table",
    "run_bench",
    "run_setting",
]
