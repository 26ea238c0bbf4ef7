"""TLS policy at the byte level: what a server (or a man in the middle) receives in
plaintext. Complements test_transport.py (STARTTLS with aiosmtpd and the sink, implicit
TLS, required TLS against a server without STARTTLS, a refused STARTTLS)."""

from __future__ import annotations

import ssl

import anyio
import pytest
import trustme
from anyio.abc import ByteStream

from mailcore.smtp import (
    RelayConfig,
    SmtpConnection,
    SmtpError,
    SmtpTlsError,
    TlsRequiredError,
    fault_sink,
)

from .conftest import Tls

pytestmark = pytest.mark.anyio

SECRET = b"Subject: payroll\r\n\r\nthe secret body 7f3a\r\n"


def relay(port: int, tls: str, **kwargs: object) -> RelayConfig:
    options: dict[str, object] = {"host": "127.0.0.1", "port": port, "tls": tls}
    options.update(kwargs)
    return RelayConfig(**options)  # type: ignore[arg-type]


def commands(plaintext: bytes) -> list[bytes]:
    """The command verbs in a plaintext byte stream."""
    return [line.split(b" ")[0] for line in plaintext.split(b"\r\n") if line]


def assert_no_mail(plaintext: bytes) -> None:
    for forbidden in (b"MAIL FROM", b"RCPT TO", b"DATA", b"BDAT", b"AUTH", b"secret body"):
        assert forbidden not in plaintext


@pytest.mark.parametrize("chunking", [True, False])
async def test_starttls_verified_and_nothing_of_the_mail_in_plaintext(
    tls: Tls, chunking: bool
) -> None:
    async with fault_sink(tls_context=tls.server, record_bytes=True, keep=True) as sink:
        config = relay(sink.port, "required", chunking=chunking)
        async with await SmtpConnection.open(config, tls_context=tls.client) as conn:
            assert conn.tls_active and conn.chunking is chunking
            assert (await conn.send("a@x.test", ["b@y.test"], SECRET)).accepted("b@y.test")
        await sink.wait_idle()
    [record] = sink.log.connections
    assert record.tls
    assert commands(record.plaintext) == [b"EHLO", b"STARTTLS"]
    assert_no_mail(record.plaintext)
    assert b"MAIL FROM:<a@x.test>" in record.over_tls and b"secret body" in record.over_tls
    assert sink.received == [("a@x.test", ("b@y.test",), SECRET)]


@pytest.mark.parametrize("mode", ["required", "opportunistic"])
async def test_required_tls_never_gives_a_stripping_server_the_mail(tls: Tls, mode: str) -> None:
    """A downgrade attacker removes STARTTLS from the EHLO reply. Required TLS stops before
    any of the mail leaves; opportunistic TLS delivers in plaintext: that is what it means
    (use ``required`` for relays, or MTA-STS/DANE-style policies, to resist it)."""
    async with fault_sink(
        tls_context=tls.server, strip_starttls=True, record_bytes=True, keep=True
    ) as sink:
        config = relay(sink.port, mode)
        if mode == "required":
            with pytest.raises(TlsRequiredError):
                await SmtpConnection.open(config, tls_context=tls.client)
        else:
            async with await SmtpConnection.open(config, tls_context=tls.client) as conn:
                assert not conn.tls_active
                assert conn.ehlo is not None and not conn.ehlo.supports("STARTTLS")
                assert (await conn.send("a@x.test", ["b@y.test"], SECRET)).accepted("b@y.test")
        await sink.wait_idle()
    [record] = sink.log.connections
    assert not record.tls and record.over_tls == b""
    if mode == "required":
        assert commands(record.plaintext) == [b"EHLO", b"QUIT"]
        assert_no_mail(record.plaintext)
        assert sink.log.transactions == [] and sink.received == []
    else:
        assert b"MAIL FROM:<a@x.test>" in record.plaintext
        assert b"secret body" in record.plaintext  # in the clear, as documented
        assert sink.received == [("a@x.test", ("b@y.test",), SECRET)]


@pytest.mark.parametrize("mode", ["required", "opportunistic"])
@pytest.mark.parametrize("which", ["wrong-name", "unknown-ca"])
async def test_a_certificate_that_does_not_verify_stops_the_session(mode: str, which: str) -> None:
    """Opportunistic or not, a failed verification is not a reason to go on in
    plaintext: the client never falls back once STARTTLS was accepted."""
    ca, client = trustme.CA(), ssl.create_default_context()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    if which == "wrong-name":
        ca.issue_cert("mx.other.test").configure_cert(server)
        ca.configure_trust(client)  # a trusted CA, but not this host's name
    else:
        ca.issue_cert("127.0.0.1").configure_cert(server)  # the right name, unknown CA
    async with fault_sink(tls_context=server, record_bytes=True) as sink:
        with pytest.raises(SmtpTlsError):
            await SmtpConnection.open(relay(sink.port, mode), tls_context=client)
        await sink.wait_idle()
    [record] = sink.log.connections
    assert commands(record.plaintext) == [b"EHLO", b"STARTTLS"]
    assert_no_mail(record.plaintext)
    assert sink.log.transactions == []


@pytest.mark.parametrize("together", [True, False])
async def test_a_fake_starttls_answer_gets_no_plaintext(together: bool) -> None:
    """A man in the middle offers STARTTLS, answers 220, then keeps talking plaintext
    SMTP, in the same packet (refused as an injection) or after the client's hello
    (the handshake fails): either way the client sends nothing more."""
    received = bytearray()
    done = anyio.Event()

    async def fake(stream: ByteStream) -> None:
        try:
            await stream.send(b"220 mitm.test ESMTP\r\n")
            while b"\r\n" not in received:
                received.extend(await stream.receive())
            await stream.send(b"250-mitm.test\r\n250-PIPELINING\r\n250 STARTTLS\r\n")
            while b"STARTTLS\r\n" not in received:
                received.extend(await stream.receive())
            if together:
                await stream.send(b"220 2.0.0 go ahead\r\n250 fake plaintext\r\n")
            else:
                await stream.send(b"220 2.0.0 go ahead\r\n")
                received.extend(await stream.receive())  # the TLS ClientHello
                await stream.send(b"250 fake plaintext\r\n")
            with anyio.move_on_after(5):
                while True:
                    received.extend(await stream.receive())
        except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
            pass
        finally:
            await stream.aclose()
            done.set()

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = int(listener.extra(anyio.abc.SocketAttribute.local_port))
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, fake, tg)
        with pytest.raises(SmtpError) as info:
            await SmtpConnection.open(relay(port, "opportunistic"))
        assert isinstance(info.value, SmtpTlsError) is not together
        with anyio.fail_after(10):
            await done.wait()
        tg.cancel_scope.cancel()
    head, _, rest = bytes(received).partition(b"STARTTLS\r\n")
    assert commands(head) == [b"EHLO"]
    if together:
        assert rest == b""
    else:
        assert rest[:1] == b"\x16"  # a TLS handshake record, nothing in plaintext
    assert_no_mail(rest)
