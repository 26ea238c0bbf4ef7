"""A development SMTP sink: accepts mail on anyio, counts it, optionally keeps it.

    sink = Sink(rules=[("*@bounce.test", 550, "5.1.1 no such user")], keep=True)
    async with anyio.create_task_group() as tg:
        port = await tg.start(sink.serve)
        ...                      # send mail to 127.0.0.1:port
        tg.cancel_scope.cancel()

Built on :class:`~mailcore.smtp.server.ServerProtocol`: PIPELINING, CHUNKING (BDAT),
SIZE, 8BITMIME, SMTPUTF8, ENHANCEDSTATUSCODES, and STARTTLS when given a TLS context
(``strip_starttls`` hides it, as a downgrade attacker would; ``chunking`` and
``pipelining`` turn those off). Recipients matching a rule's fnmatch pattern
(case-insensitive) get that rule's reply to RCPT. Messages can be written to a maildir
(``tmp/`` then renamed into ``new/``). :mod:`.faults` builds a fault-injecting sink with a
log on the hooks here (``_greet``, ``_answer``, ``_opened``, ``_closed``, ``_received``).
"""

from __future__ import annotations

import fnmatch
import itertools
import os
import re
import signal
import socket
import ssl
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import ByteStream, TaskStatus
from anyio.streams.tls import TLSStream

from .errors import ProtocolError
from .events import (
    NEED_DATA,
    ConnectionClosed,
    MessageReceived,
    QuitRequested,
    RcptTo,
    ServerEvent,
    StartTlsRequested,
)
from .reply import Reply
from .server import DEFAULT_MAX_SIZE, ServerProtocol

Rule = tuple[str, int, str]
"""``(fnmatch pattern on the recipient, reply code, reply text)``."""

_RULE = re.compile(r"^(.+)=([2-5][0-9][0-9])(?:[ :](.*))?$")
_DEFAULT_TEXT = {2: "2.1.5 OK", 4: "4.2.0 Deferred by sink rule", 5: "5.1.1 Rejected by sink rule"}


DROP = None
"""What :meth:`Sink._answer` returns to close the connection instead of answering (the
replies not yet written are lost with it)."""


@dataclass(eq=False)
class SinkConnection:
    """One client connection to a sink (what the hooks are given)."""

    id: int
    """1, 2, 3… in the order connections were accepted."""
    client: str
    """The client's IP address."""
    stream: ByteStream
    proto: ServerProtocol
    opened: float = field(default_factory=time.time)
    replies: int = 0
    """Replies given so far, the greeting included."""


def parse_reject_rule(text: str) -> Rule:
    """``PATTERN=CODE[ TEXT]`` (e.g. ``*@bounce.test=550`` or
    ``*@busy.test=451 4.7.1 try later``) to a rule. Raises ValueError."""
    m = _RULE.match(text.strip())
    if m is None:
        raise ValueError(f"expected PATTERN=CODE[ TEXT] (e.g. '*@bounce.test=550'), got {text!r}")
    code = int(m[2])
    if code // 100 == 3:
        raise ValueError(f"{code} is not an answer to RCPT (use 2xx, 4xx or 5xx)")
    return m[1], code, (m[3] or "").strip() or _DEFAULT_TEXT[code // 100]


class Sink:
    """The dev SMTP server. Counters are always kept; ``received`` only with ``keep``."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        hostname: str = "sink.mailcore.test",
        keep: bool = False,
        maildir: Path | None = None,
        rules: Sequence[Rule] = (),
        tls_context: ssl.SSLContext | None = None,
        strip_starttls: bool = False,
        chunking: bool = True,
        pipelining: bool = True,
        max_size: int = DEFAULT_MAX_SIZE,
        idle_timeout: float = 300.0,
    ) -> None:
        self.host = host
        self.port = port
        self.hostname = hostname
        self.keep = keep
        self.maildir = maildir
        self.rules = [(pattern.lower(), code, text) for pattern, code, text in rules]
        self.tls_context = tls_context
        self.strip_starttls = strip_starttls
        self.chunking = chunking
        self.pipelining = pipelining
        self.max_size = max_size
        self.idle_timeout = idle_timeout
        self.received: list[tuple[str, tuple[str, ...], bytes]] = []
        self.messages = 0
        self.recipients = 0
        self.rejected = 0
        self.connections = 0
        self.bound_port: int | None = None
        self._seq = itertools.count()
        self._connection_ids = itertools.count(1)

    # -- serving ---------------------------------------------------------------------

    async def serve(self, *, task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED) -> None:
        """Listen and serve until cancelled; ``task_status.started(port)`` once bound."""
        if self.maildir is not None:
            for sub in ("tmp", "new", "cur"):
                await anyio.Path(self.maildir, sub).mkdir(parents=True, exist_ok=True)
        listener = await anyio.create_tcp_listener(local_host=self.host, local_port=self.port)
        async with listener:
            port = int(listener.extra(anyio.abc.SocketAttribute.local_port))
            self.bound_port = port
            async with anyio.create_task_group() as tg:
                task_status.started(port)
                await listener.serve(self._handle, task_group=tg)

    async def _handle(self, stream: ByteStream) -> None:
        self.connections += 1
        try:
            address = stream.extra(anyio.abc.SocketAttribute.remote_address)
        except anyio.TypedAttributeLookupError:
            address = ("", 0)
        proto = ServerProtocol(
            self.hostname,
            max_size=self.max_size,
            starttls=self.tls_context is not None and not self.strip_starttls,
            chunking=self.chunking,
            pipelining=self.pipelining,
        )
        client = str(address[0]) if isinstance(address, tuple) else str(address)
        conn = SinkConnection(next(self._connection_ids), client, stream, proto)
        self._opened(conn)
        try:
            await self._session(conn)
        except (
            ProtocolError,
            OSError,
            TimeoutError,
            anyio.BrokenResourceError,
            anyio.ClosedResourceError,
            anyio.EndOfStream,
        ):
            pass  # one bad client does not stop the sink
        finally:
            self._closed(conn)
            await anyio.aclose_forcefully(conn.stream)

    async def _session(self, conn: SinkConnection) -> None:
        proto = conn.proto
        out = bytearray(proto.send(await self._greet(conn)))
        conn.replies += 1
        while True:
            event = proto.next_event()
            if event is NEED_DATA:
                if out:
                    await conn.stream.send(bytes(out))
                    out.clear()
                with anyio.fail_after(self.idle_timeout):
                    try:
                        data = await conn.stream.receive(65536)
                    except anyio.EndOfStream:
                        data = b""
                self._received(conn, data)
                proto.receive_data(data)
                continue
            if isinstance(event, ConnectionClosed):
                if out:
                    await conn.stream.send(bytes(out))
                return
            reply = await self._answer(conn, event)
            if reply is DROP:
                # Replies to the commands before this one go out first (a server answers
                # as it goes): only this event's reply is lost with the connection.
                if out:
                    await conn.stream.send(bytes(out))
                return
            out += proto.send(reply)
            conn.replies += 1
            if isinstance(event, QuitRequested):
                await conn.stream.send(bytes(out))
                return
            if isinstance(event, StartTlsRequested) and reply.code == 220:
                assert self.tls_context is not None
                await conn.stream.send(bytes(out))
                out.clear()
                with anyio.fail_after(self.idle_timeout):
                    conn.stream = await TLSStream.wrap(
                        conn.stream,
                        server_side=True,
                        ssl_context=self.tls_context,
                        standard_compatible=False,
                    )

    # -- hooks (see .faults) ---------------------------------------------------------

    def _opened(self, conn: SinkConnection) -> None:
        """A connection was accepted."""

    def _closed(self, conn: SinkConnection) -> None:
        """The connection ends (whatever the reason)."""

    def _received(self, conn: SinkConnection, data: bytes) -> None:
        """Bytes from the client (``b""``: EOF), after TLS decryption once it is up."""

    async def _greet(self, conn: SinkConnection) -> Reply:
        """The greeting (a 421 or 554 refuses the session)."""
        return Reply.of(220, f"{self.hostname} ESMTP mailcore sink")

    async def _answer(self, conn: SinkConnection, event: ServerEvent) -> Reply | None:
        """The reply to ``event``, or :data:`DROP` to close the connection instead."""
        return await self._reply(conn.proto, event)

    async def _reply(self, proto: ServerProtocol, event: ServerEvent) -> Reply:
        """The reply by the rules (counting as it goes); subclasses override this."""
        if isinstance(event, RcptTo):
            address = event.address.lower()
            for pattern, code, text in self.rules:
                if fnmatch.fnmatchcase(address, pattern):
                    if code >= 300:
                        self.rejected += 1
                    return Reply.of(code, text)
        if isinstance(event, MessageReceived):
            self.messages += 1
            self.recipients += len(event.recipients)
            if self.keep:
                self.received.append((event.mail_from, event.recipients, event.content))
            if self.maildir is not None:
                await anyio.to_thread.run_sync(self._deliver, event)
        return proto.default_reply(event)

    def _deliver(self, event: MessageReceived) -> None:
        assert self.maildir is not None
        name = f"{time.time_ns()}.P{os.getpid()}Q{next(self._seq)}.{socket.gethostname()}"
        header = f"Return-Path: <{event.mail_from}>\r\n"
        header += "".join(f"Delivered-To: {r}\r\n" for r in event.recipients)
        tmp = self.maildir / "tmp" / name
        with open(tmp, "wb") as f:
            f.write(header.encode() + event.content)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, self.maildir / "new" / name)

    def summary(self) -> str:
        return (
            f"{self.messages} messages, {self.recipients} recipients "
            f"({self.rejected} rejected), {self.connections} connections"
        )


def sink_command(
    port: int,
    host: str,
    maildir: Path | None,
    reject: list[str],
    *,
    faults: str | None = None,
    log: Path | None = None,
    chunking: bool = True,
    pipelining: bool = True,
    strip_starttls: bool = False,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
) -> None:
    """``mailcore sink``: run a :class:`Sink` on Trio until Ctrl-C (or SIGTERM), printing
    the counters whenever they change (at most every 2 s). ``reject`` holds
    ``PATTERN=CODE[ TEXT]`` rules; ``faults`` a :meth:`~.faults.FaultPlan.parse` spec and
    ``log`` a JSON-lines file, either making it a :class:`~.faults.FaultSink`; ``tls_cert``
    (and ``tls_key``) a PEM certificate to offer STARTTLS with. Bad options raise
    ValueError before listening."""
    from .faults import FaultPlan, FaultSink, write_summary

    rules = [parse_reject_rule(r) for r in reject]
    plan = FaultPlan.parse(faults) if faults is not None else None
    tls_context: ssl.SSLContext | None = None
    if tls_cert is not None:
        tls_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls_context.load_cert_chain(tls_cert, tls_key)
    elif tls_key is not None:
        raise ValueError("--tls-key needs --tls-cert")
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "maildir": maildir,
        "rules": rules,
        "tls_context": tls_context,
        "strip_starttls": strip_starttls,
        "chunking": chunking,
        "pipelining": pipelining,
    }
    log_file = open(log, "w", encoding="utf-8", buffering=1 << 16) if log is not None else None  # noqa: SIM115
    sink: Sink
    if plan is not None or log_file is not None:
        sink = FaultSink(plan, log_file=log_file, **options)
    else:
        sink = Sink(**options)

    async def main() -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with anyio.create_task_group() as tg:
                bound = await tg.start(sink.serve)
                where = f" writing to {maildir}" if maildir is not None else ""
                print(f"mailcore sink listening on {host}:{bound}{where}", flush=True)
                for pattern, code, text in rules:
                    print(f"  rule: {pattern} -> {code} {text}", flush=True)
                if plan is not None:
                    print(f"  faults: {plan.describe()}", flush=True)
                offered = [
                    name
                    for name, on in (
                        ("PIPELINING", pipelining),
                        ("CHUNKING", chunking),
                        ("STARTTLS", tls_context is not None and not strip_starttls),
                    )
                    if on
                ]
                print(f"  offering: {' '.join(offered) or 'no extensions'}", flush=True)
                tg.start_soon(report)
                async for _ in signals:
                    tg.cancel_scope.cancel()
                    break

    async def report() -> None:
        last = ""
        while True:
            await anyio.sleep(2)
            line = sink.summary()
            if line != last:
                print(line, flush=True)
                last = line

    try:
        anyio.run(main, backend="trio")
    finally:
        if log_file is not None:
            log_file.close()
            if isinstance(sink, FaultSink) and log is not None:
                write_summary(sink.log, log)
    print(f"stopped: {sink.summary()}", file=sys.stderr, flush=True)
