"""Servers for the transport tests, all on loopback: aiosmtpd (a server none of our code
wrote), our Sink, and tiny scripted servers built on ServerProtocol that misbehave on
purpose (hang, refuse EHLO, drop the connection after the final dot…)."""

from __future__ import annotations

import socket
import ssl
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from anyio.abc import ByteStream

from mailcore.smtp import (
    NEED_DATA,
    ConnectionClosed,
    QuitRequested,
    Reply,
    ServerEvent,
    ServerProtocol,
)


@dataclass
class Tls:
    server: ssl.SSLContext
    client: ssl.SSLContext


@pytest.fixture(scope="session")
def tls() -> Tls:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return Tls(server, client)


# -- aiosmtpd ----------------------------------------------------------------------------


@dataclass
class Recorder:
    """aiosmtpd handler: keeps envelopes, refuses recipients by domain."""

    messages: list[Envelope] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    reject: dict[str, str] = field(default_factory=dict)  # domain -> reply
    pipelining: bool = False

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname
        if self.pipelining:
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        self.commands.append("MAIL")
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 2.1.0 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        self.commands.append("RCPT")
        reply = self.reject.get(address.rpartition("@")[2])
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.messages.append(envelope)
        return "250 2.0.0 queued"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


USERS = {"alice": "s3cret"}


def authenticate(
    server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
) -> AuthResult:
    ok = (
        isinstance(auth_data, LoginPassword)
        and USERS.get(auth_data.login.decode()) == auth_data.password.decode()
    )
    return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd sends the 535


@contextmanager
def aiosmtpd_server(handler: Recorder, **kwargs: Any) -> Iterator[int]:
    """Run aiosmtpd (in its own thread, with its own asyncio loop); yield the port."""
    port = free_port()
    kwargs.setdefault("enable_SMTPUTF8", False)
    controller = Controller(handler, hostname="127.0.0.1", port=port, **kwargs)
    controller.start()
    try:
        yield port
    finally:
        controller.stop()


# -- scripted servers ---------------------------------------------------------------------

HANG = object()
"""Returned by a script: never answer (the test's timeout must fire)."""
DROP = object()
"""Returned by a script: close the connection instead of answering."""

Script = Callable[[ServerProtocol, ServerEvent], Reply | object | None]
"""Given the event, a Reply, HANG, DROP, or None for the default reply."""


@dataclass
class Scripted:
    port: int
    log: list[ServerEvent] = field(default_factory=list)
    raw: list[bytes] = field(default_factory=list)


async def _scripted_session(
    stream: ByteStream,
    script: Script,
    greeting: Reply | object,
    record: Scripted,
    tls_context: ssl.SSLContext | None,
    options: dict[str, bool],
) -> None:
    from anyio.streams.tls import TLSStream

    from mailcore.smtp import StartTlsRequested

    proto = ServerProtocol("scripted.test", starttls=tls_context is not None, **options)
    try:
        if greeting is HANG:
            await anyio.sleep_forever()
        assert isinstance(greeting, Reply)
        await stream.send(proto.send(greeting))
        out = bytearray()
        while True:
            event = proto.next_event()
            if event is NEED_DATA:
                if out:
                    await stream.send(bytes(out))
                    out.clear()
                try:
                    data = await stream.receive()
                except anyio.EndOfStream:
                    data = b""
                record.raw.append(data)
                proto.receive_data(data)
                continue
            if isinstance(event, ConnectionClosed):
                if out:
                    await stream.send(bytes(out))  # e.g. a 421
                return
            record.log.append(event)
            answer = script(proto, event)
            if answer is HANG:
                if out:
                    await stream.send(bytes(out))
                await anyio.sleep_forever()
            if answer is DROP:
                if out:
                    await stream.send(bytes(out))
                return
            reply = answer if isinstance(answer, Reply) else proto.default_reply(event)
            out += proto.send(reply)
            if isinstance(event, QuitRequested):
                await stream.send(bytes(out))
                return
            if isinstance(event, StartTlsRequested) and reply.code == 220:
                assert tls_context is not None
                await stream.send(bytes(out))
                out.clear()
                stream = await TLSStream.wrap(
                    stream, server_side=True, ssl_context=tls_context, standard_compatible=False
                )
    except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
        pass
    finally:
        await anyio.aclose_forcefully(stream)


GREETING = Reply.of(220, "scripted.test ESMTP")


@asynccontextmanager
async def scripted_server(
    script: Script = lambda proto, event: None,
    *,
    greeting: Reply | object = GREETING,
    tls_context: ssl.SSLContext | None = None,
    chunking: bool = True,
    pipelining: bool = True,
) -> AsyncIterator[Scripted]:
    """A server on loopback answering as ``script`` says (CHUNKING and PIPELINING
    advertised unless told otherwise)."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    record = Scripted(port=int(listener.extra(anyio.abc.SocketAttribute.local_port)))

    async def handle(stream: ByteStream) -> None:
        options = {"chunking": chunking, "pipelining": pipelining}
        await _scripted_session(stream, script, greeting, record, tls_context, options)

    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handle, tg)
        yield record
        tg.cancel_scope.cancel()
