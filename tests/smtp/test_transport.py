"""SmtpConnection over real loopback sockets: against aiosmtpd, our Sink, and scripted
servers that misbehave."""

from __future__ import annotations

import socket
import struct

import anyio
import anyio.abc
import anyio.lowlevel
import pytest

from mailcore.smtp import (
    DataStart,
    Hello,
    MailFrom,
    MessageReceived,
    QuitRequested,
    RcptTo,
    RelayConfig,
    Reply,
    ServerEvent,
    ServerProtocol,
    Sink,
    SmtpAuthError,
    SmtpConnectError,
    SmtpConnection,
    SmtpConnectionLost,
    SmtpReplyError,
    SmtpTimeout,
    SmtpTlsError,
    StartTlsRequested,
    TlsRequiredError,
    normalize_newlines,
)
from mailcore.smtp._plain import PlainTrioStream, plain_stream

from .conftest import DROP, HANG, Recorder, Tls, aiosmtpd_server, scripted_server

pytestmark = pytest.mark.anyio


def relay(port: int, **kwargs: object) -> RelayConfig:
    options: dict[str, object] = {"host": "127.0.0.1", "port": port, "tls": "none"}
    options.update(kwargs)
    return RelayConfig(**options)  # type: ignore[arg-type]


CONTENT = b"Subject: test\r\n\r\n.leading dot\nbare LF\rbare CR\r\n.\r\nend"


# -- against aiosmtpd -----------------------------------------------------------------------


async def test_many_messages_on_one_connection_to_aiosmtpd() -> None:
    handler = Recorder(reject={"bounce.test": "550 5.1.1 no such user"})
    with aiosmtpd_server(handler) as port:
        async with await SmtpConnection.open(relay(port)) as conn:
            assert not conn.pipelining
            for i in range(20):
                outcome = await conn.send(
                    "from@x.test", [f"to{i}@y.test", "gone@bounce.test"], CONTENT
                )
                assert outcome.status(f"to{i}@y.test") == "delivered"
                assert outcome.status("gone@bounce.test") == "bounced"
                assert outcome.accepted(f"to{i}@y.test")
                assert not outcome.accepted("gone@bounce.test")
                assert outcome.reply_for("gone@bounce.test").enhanced == (5, 1, 1)
            assert not conn.broken
        assert conn.closed and not conn.broken
    assert len(handler.messages) == 20
    envelope = handler.messages[0]
    assert envelope.mail_from == "from@x.test"
    assert envelope.rcpt_tos == ["to0@y.test"]
    assert envelope.content == normalize_newlines(CONTENT)  # dot-stuffing undone by them


async def test_pipelining_with_aiosmtpd() -> None:
    handler = Recorder(pipelining=True, reject={"later.test": "451 4.7.1 try later"})
    with aiosmtpd_server(handler) as port:
        async with await SmtpConnection.open(relay(port)) as conn:
            assert conn.pipelining
            for _ in range(5):
                outcome = await conn.send("a@x.test", ["b@y.test", "c@later.test"], b"hi\n")
                assert outcome.statuses == {"b@y.test": "delivered", "c@later.test": "deferred"}
            outcome = await conn.send("a@x.test", ["c@later.test"], b"hi\n")
            assert outcome.status("c@later.test") == "deferred"
            assert outcome.data is not None and outcome.data.code == 503  # DATA refused
            outcome = await conn.send("a@x.test", ["b@y.test"], b"again\n")  # RSET worked
            assert outcome.status("b@y.test") == "delivered"
    assert len(handler.messages) == 6


EIGHT_BIT = "Subject: é\r\n\r\ncafé\r\n".encode()


async def test_size_and_8bitmime_parameters() -> None:
    handler = Recorder()
    with aiosmtpd_server(handler) as port:
        async with await SmtpConnection.open(relay(port)) as conn:
            await conn.send("a@x.test", ["b@y.test"], EIGHT_BIT)
            await conn.send("a@x.test", ["b@y.test"], b"plain\r\n")
    eight, seven = handler.messages
    assert "BODY=8BITMIME" in eight.mail_options
    assert f"SIZE={len(EIGHT_BIT)}" in eight.mail_options
    assert "BODY=8BITMIME" not in seven.mail_options


async def test_smtputf8_not_offered_fails_without_sending() -> None:
    handler = Recorder()
    with aiosmtpd_server(handler) as port:  # aiosmtpd: SMTPUTF8 off by default
        async with await SmtpConnection.open(relay(port)) as conn:
            outcome = await conn.send("a@x.test", ["b@y.test", "ü@y.test"], b"x\r\n")
            assert outcome.statuses == {"b@y.test": "bounced", "ü@y.test": "bounced"}
            assert outcome.mail.code == 553 and outcome.mail.enhanced == (5, 6, 7)
            assert outcome.data is None
            assert (await conn.send("a@x.test", ["b@y.test"], b"x\r\n")).accepted("b@y.test")
    assert handler.commands == ["MAIL", "RCPT"]  # only the ASCII message went out


async def test_smtputf8_with_aiosmtpd() -> None:
    handler = Recorder()
    with aiosmtpd_server(handler, enable_SMTPUTF8=True) as port:
        async with await SmtpConnection.open(relay(port)) as conn:
            outcome = await conn.send("ä@x.test", ["ü@y.test"], "Subject: ü\r\n\r\nü\r\n".encode())
            assert outcome.accepted("ü@y.test")
    [envelope] = handler.messages
    assert envelope.mail_from == "ä@x.test" and envelope.rcpt_tos == ["ü@y.test"]
    assert "SMTPUTF8" in envelope.mail_options


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
@pytest.mark.filterwarnings("ignore:Session.login_data is deprecated")
@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
async def test_auth_with_aiosmtpd(mechanism: str) -> None:
    from .conftest import authenticate

    exclude = [m for m in ("PLAIN", "LOGIN") if m != mechanism]
    handler = Recorder()
    kwargs = {
        "authenticator": authenticate,
        "auth_require_tls": False,
        "auth_required": True,
        "auth_exclude_mechanism": exclude,
    }
    with aiosmtpd_server(handler, **kwargs) as port:
        config = relay(port, username="alice", password="s3cret")
        async with await SmtpConnection.open(config) as conn:
            assert conn.authenticated
            assert (await conn.send("a@x.test", ["b@y.test"], b"x\r\n")).accepted("b@y.test")
        with pytest.raises(SmtpAuthError) as info:
            await SmtpConnection.open(relay(port, username="alice", password="wrong"))
        assert info.value.reply.code == 535
    assert len(handler.messages) == 1


@pytest.mark.filterwarnings("ignore:Session.login_data is deprecated")
async def test_starttls_and_auth_with_aiosmtpd(tls: Tls) -> None:
    from .conftest import authenticate

    handler = Recorder()
    kwargs = {"tls_context": tls.server, "authenticator": authenticate, "require_starttls": True}
    with aiosmtpd_server(handler, **kwargs) as port:
        for mode in ("opportunistic", "required"):
            config = relay(port, tls=mode, username="alice", password="s3cret")
            async with await SmtpConnection.open(config, tls_context=tls.client) as conn:
                assert conn.tls_active and conn.authenticated
                assert conn.ehlo is not None and not conn.ehlo.supports("STARTTLS")
                assert (await conn.send("a@x.test", ["b@y.test"], b"x\r\n")).accepted("b@y.test")
        # the server's certificate is not trusted by the default context
        with pytest.raises(SmtpTlsError):
            await SmtpConnection.open(relay(port, tls="opportunistic"))
    assert len(handler.messages) == 2


async def test_implicit_tls_with_aiosmtpd(tls: Tls) -> None:
    handler = Recorder()
    with aiosmtpd_server(handler, ssl_context=tls.server) as port:
        config = RelayConfig.from_url(f"smtps://127.0.0.1:{port}")
        async with await SmtpConnection.open(config, tls_context=tls.client) as conn:
            assert conn.tls_active
            assert (await conn.send("a@x.test", ["b@y.test"], b"x\r\n")).accepted("b@y.test")
    assert len(handler.messages) == 1


# -- against our Sink -------------------------------------------------------------------------


async def test_sink_rules_pipelining_and_reuse() -> None:
    rules = [("*@bounce.test", 550, "5.1.1 no such user"), ("*@busy.test", 451, "4.7.1 later")]
    sink = Sink(keep=True, rules=rules)
    async with anyio.create_task_group() as tg:
        port = await tg.start(sink.serve)
        async with await SmtpConnection.open(relay(port)) as conn:
            assert conn.pipelining
            for i in range(50):
                outcome = await conn.send(
                    "a@x.test", [f"ok{i}@y.test", "x@bounce.test", "y@busy.test"], CONTENT
                )
                assert outcome.statuses == {
                    f"ok{i}@y.test": "delivered",
                    "x@bounce.test": "bounced",
                    "y@busy.test": "deferred",
                }
            outcome = await conn.send("a@x.test", ["x@bounce.test", "y@busy.test"], CONTENT)
            assert outcome.statuses == {"x@bounce.test": "bounced", "y@busy.test": "deferred"}
            assert outcome.data is not None and outcome.data.code == 554
            assert not conn.broken
            assert (await conn.send("a@x.test", ["z@y.test"], b"last")).accepted("z@y.test")
        tg.cancel_scope.cancel()
    assert sink.messages == 51 and sink.recipients == 51 and sink.connections == 1
    assert sink.rejected == 102
    assert sink.received[0] == ("a@x.test", ("ok0@y.test",), normalize_newlines(CONTENT))


async def test_pipelined_commands_go_in_one_write() -> None:
    async with (
        scripted_server(chunking=False) as server,
        await SmtpConnection.open(relay(server.port)) as conn,
    ):
        assert not conn.chunking
        await conn.send("a@x.test", ["b@y.test", "c@y.test"], b"x\r\n")
    batch = [chunk for chunk in server.raw if b"MAIL FROM" in chunk]
    assert batch == [b"MAIL FROM:<a@x.test> SIZE=3\r\nRCPT TO:<b@y.test>\r\n"
                     b"RCPT TO:<c@y.test>\r\nDATA\r\n"]  # fmt: skip


async def test_starttls_with_sink(tls: Tls) -> None:
    sink = Sink(tls_context=tls.server)
    async with anyio.create_task_group() as tg:
        port = await tg.start(sink.serve)
        config = RelayConfig.from_url(f"smtp://127.0.0.1:{port}")  # opportunistic
        async with await SmtpConnection.open(config, tls_context=tls.client) as conn:
            assert conn.tls_active
            for _ in range(3):
                assert (await conn.send("a@x.test", ["b@y.test"], b"x")).accepted("b@y.test")
        tg.cancel_scope.cancel()
    assert sink.messages == 3


async def test_message_too_big_for_the_server_is_not_sent() -> None:
    sink = Sink(max_size=100)
    async with anyio.create_task_group() as tg:
        port = await tg.start(sink.serve)
        async with await SmtpConnection.open(relay(port)) as conn:
            outcome = await conn.send("a@x.test", ["b@y.test"], b"x" * 200)
            assert outcome.status("b@y.test") == "bounced" and outcome.mail.code == 552
            assert (await conn.send("a@x.test", ["b@y.test"], b"x" * 50)).accepted("b@y.test")
        tg.cancel_scope.cancel()
    assert sink.messages == 1


# -- TLS policy ---------------------------------------------------------------------------------


async def test_required_tls_refuses_a_server_without_starttls() -> None:
    async with scripted_server() as server:  # no STARTTLS offered (as if stripped)
        with pytest.raises(TlsRequiredError):
            await SmtpConnection.open(relay(server.port, tls="required"))
    assert [type(e) for e in server.log] == [Hello, QuitRequested]
    assert not any(isinstance(e, MailFrom | RcptTo | DataStart) for e in server.log)


async def test_required_tls_when_starttls_is_refused(tls: Tls) -> None:
    def refuse(proto: ServerProtocol, event: ServerEvent) -> Reply | None:
        return (
            Reply.of(454, "4.7.0 TLS not available")
            if isinstance(event, StartTlsRequested)
            else None
        )

    async with scripted_server(refuse, tls_context=tls.server) as server:
        with pytest.raises(TlsRequiredError):
            await SmtpConnection.open(relay(server.port, tls="required"), tls_context=tls.client)
        # opportunistic goes on in plaintext; no credentials, so that is allowed
        config = relay(server.port, tls="opportunistic")
        async with await SmtpConnection.open(config, tls_context=tls.client) as conn:
            assert not conn.tls_active
            assert (await conn.send("a@x.test", ["b@y.test"], b"x")).accepted("b@y.test")
    mails = [e for e in server.log if isinstance(e, MailFrom)]
    assert len(mails) == 1  # only from the opportunistic session


async def test_credentials_are_never_sent_in_plaintext_by_opportunistic() -> None:
    async with scripted_server() as server:
        config = relay(server.port, tls="opportunistic", username="u", password="p")
        with pytest.raises(TlsRequiredError):
            await SmtpConnection.open(config)
    assert [type(e) for e in server.log] == [Hello, QuitRequested]


# -- failures -------------------------------------------------------------------------------------


async def test_ehlo_refused_falls_back_to_helo() -> None:
    def no_ehlo(proto: ServerProtocol, event: ServerEvent) -> Reply | None:
        if isinstance(event, Hello) and event.extended:
            return Reply.of(502, "5.5.1 EHLO not implemented")
        return None

    async with (
        scripted_server(no_ehlo) as server,
        await SmtpConnection.open(relay(server.port)) as conn,
    ):
        assert conn.ehlo is not None and conn.ehlo.extensions == {}
        assert not conn.pipelining
        outcome = await conn.send("a@x.test", ["b@y.test"], "8-bit body é".encode())
        assert outcome.accepted("b@y.test")
    hellos = [e for e in server.log if isinstance(e, Hello)]
    assert [h.extended for h in hellos] == [True, False]
    [mail] = [e for e in server.log if isinstance(e, MailFrom)]
    assert mail.params == {}  # no SIZE/BODY parameters after HELO


@pytest.mark.parametrize(
    ("phase", "trigger", "chunking"),
    [
        ("ehlo", Hello, False),
        ("mail", MailFrom, False),
        ("rcpt", RcptTo, False),
        ("data", DataStart, False),
        ("message-end", MessageReceived, False),
        ("mail", MailFrom, True),
        ("rcpt", RcptTo, True),
        ("message-end", MessageReceived, True),
    ],
)
@pytest.mark.parametrize("pipelining", [True, False])
async def test_timeout_per_phase(
    phase: str, trigger: type, chunking: bool, pipelining: bool
) -> None:
    def hang(proto: ServerProtocol, event: ServerEvent) -> object:
        if isinstance(event, trigger) and (phase == "ehlo" or not isinstance(event, Hello)):
            return HANG
        if isinstance(event, Hello) and event.extended and not pipelining:
            return Reply.of(502, "5.5.1 use HELO")  # no PIPELINING after HELO
        return None

    timeouts = {f"{p}_timeout": 0.2 for p in ("ehlo", "mail", "rcpt", "data", "message_end")}
    async with scripted_server(hang, chunking=chunking) as server:
        config = relay(server.port, **timeouts)
        with anyio.fail_after(5):
            if phase == "ehlo":
                with pytest.raises(SmtpTimeout) as info:
                    await SmtpConnection.open(config)
            else:
                conn = await SmtpConnection.open(config)
                assert conn.pipelining is pipelining
                assert conn.chunking is (chunking and pipelining)  # no EHLO, no CHUNKING
                with pytest.raises(SmtpTimeout) as info:
                    await conn.send("a@x.test", ["b@y.test"], b"x")
                assert conn.broken
                with pytest.raises(anyio.BrokenResourceError):
                    await conn.send("a@x.test", ["b@y.test"], b"x")
                await conn.aclose()
                assert conn.closed
    assert info.value.phase == phase
    # Sent in one write with the envelope, the chunk may have been taken whatever hung.
    in_doubt = phase == "message-end" or (chunking and pipelining and phase != "ehlo")
    assert info.value.outcome_unknown is in_doubt


async def test_greeting_and_connect_timeouts() -> None:
    async with scripted_server(greeting=HANG) as server:
        with anyio.fail_after(5), pytest.raises(SmtpTimeout) as info:
            await SmtpConnection.open(relay(server.port, greeting_timeout=0.2))
    assert info.value.phase == "greeting"


async def test_connection_refused() -> None:
    from .conftest import free_port

    with pytest.raises(SmtpConnectError):
        await SmtpConnection.open(relay(free_port()))


async def test_refused_greeting() -> None:
    async with scripted_server(greeting=Reply.of(554, "5.3.2 no service")) as server:
        with pytest.raises(SmtpReplyError) as info:
            await SmtpConnection.open(relay(server.port))
    assert info.value.reply.code == 554 and info.value.phase == "greeting"


@pytest.mark.parametrize("chunking", [False, True])
async def test_connection_lost_after_the_final_dot(chunking: bool) -> None:
    def drop(proto: ServerProtocol, event: ServerEvent) -> object:
        return DROP if isinstance(event, MessageReceived) else None

    async with scripted_server(drop, chunking=chunking) as server:
        conn = await SmtpConnection.open(relay(server.port))
        with pytest.raises(SmtpConnectionLost) as info:
            await conn.send("a@x.test", ["b@y.test"], b"x")
        assert info.value.phase == "message-end"  # the MAIL and RCPT replies came
        assert info.value.outcome_unknown
        assert conn.broken
        await conn.aclose()
    assert [type(e) for e in server.log][-1] is MessageReceived


@pytest.mark.parametrize("chunking", [False, True])
async def test_connection_lost_before_the_message(chunking: bool) -> None:
    def drop(proto: ServerProtocol, event: ServerEvent) -> object:
        return DROP if isinstance(event, RcptTo) else None

    async with scripted_server(drop, chunking=chunking) as server:
        conn = await SmtpConnection.open(relay(server.port))
        with pytest.raises(SmtpConnectionLost) as info:
            await conn.send("a@x.test", ["b@y.test"], b"x")
        # DATA: the message never left. BDAT: it went with the envelope, and a server
        # that took it and lost the replies looks the same from here.
        assert info.value.outcome_unknown is chunking
        assert conn.broken
        await conn.aclose()


async def test_421_breaks_the_connection() -> None:
    def shut(proto: ServerProtocol, event: ServerEvent) -> object:
        return Reply.of(421, "4.3.2 shutting down") if isinstance(event, RcptTo) else None

    async with scripted_server(shut) as server:
        conn = await SmtpConnection.open(relay(server.port))
        outcome = await conn.send("a@x.test", ["b@y.test", "c@y.test"], b"x")
        assert outcome.statuses == {"b@y.test": "deferred", "c@y.test": "deferred"}
        assert conn.broken
        await conn.aclose()


async def test_closed_connection_refuses_use() -> None:
    sink = Sink()
    async with anyio.create_task_group() as tg:
        port = await tg.start(sink.serve)
        conn = await SmtpConnection.open(relay(port))
        await conn.aclose()
        await conn.aclose()  # idempotent
        with pytest.raises(anyio.ClosedResourceError):
            await conn.send("a@x.test", ["b@y.test"], b"x")
        tg.cancel_scope.cancel()


def test_relay_config_from_url() -> None:
    c = RelayConfig.from_url("smtp://us%40er:p%3Ass@mx.test:2525?tls=opportunistic")
    assert (c.host, c.port, c.tls, c.username, c.password) == (
        "mx.test",
        2525,
        "opportunistic",
        "us@er",
        "p:ss",
    )
    assert "p:ss" not in repr(c)
    assert RelayConfig.from_url("smtps://mx.test").port == 465
    assert RelayConfig.from_url("smtps://mx.test").tls == "implicit"
    assert RelayConfig.from_url("submission://mx.test").port == 587
    assert RelayConfig.from_url("submission://mx.test").tls == "required"
    assert RelayConfig.from_url("smtp://mx.test").port == 25
    assert RelayConfig.from_url("smtp://[::1]:26?tls=none&data_timeout=3").data_timeout == 3
    assert RelayConfig(host="h", tls="implicit").port == 465
    for bad in (
        "http://x",
        "smtp://",
        "smtp://h?tls=maybe",
        "smtp://h?foo=1",
        "smtps://h?tls=none",
    ):
        with pytest.raises(ValueError):
            RelayConfig.from_url(bad)
    with pytest.raises(ValueError):
        RelayConfig(host="h", username="u")
    with pytest.raises(ValueError):
        RelayConfig(host="h", connect_timeout=0)


# -- the plain stream the client uses on Trio ------------------------------------------------


async def test_the_plain_stream_moves_every_byte_and_ends_as_anyio_streams_do() -> None:
    """Plain TCP on Trio goes through PlainTrioStream (one system call per send and per
    receive): a write larger than the socket buffers waits for the reader and arrives
    whole and in order; the peer's close is EndOfStream, a reset BrokenResourceError,
    our own close ClosedResourceError, as with anyio's stream."""
    payload = bytes(range(256)) * 32_768  # 8 MiB: far more than the kernel buffers
    got = bytearray()
    done = anyio.Event()

    async def peer(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            if got:  # the second connection: a clean close after a word
                await stream.send(b"bye")
                return
            while len(got) < len(payload):
                got.extend(await stream.receive())
                await anyio.lowlevel.checkpoint()  # a slow reader: the writer must wait
            await stream.send(b"bye")
            await done.wait()
            sock = stream.extra(anyio.abc.SocketAttribute.raw_socket)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, peer)
        stream = plain_stream(await anyio.connect_tcp("127.0.0.1", port))
        assert isinstance(stream, PlainTrioStream)
        with anyio.fail_after(30):
            await stream.send(payload)
            assert await stream.receive() == b"bye"
        assert bytes(got) == payload
        done.set()  # the peer closes with a reset (SO_LINGER 0)
        with anyio.fail_after(10), pytest.raises(anyio.BrokenResourceError):
            await stream.receive()
        await stream.aclose()
        with pytest.raises(anyio.ClosedResourceError):
            await stream.send(b"x")
        with pytest.raises(anyio.ClosedResourceError):
            await stream.receive()

        async with plain_stream(await anyio.connect_tcp("127.0.0.1", port)) as other:
            with anyio.fail_after(10):
                assert await other.receive() == b"bye"
                with pytest.raises(anyio.EndOfStream):
                    await other.receive()

        # Two receivers at once, and a close under a waiting receiver: anyio's errors.
        errors: list[BaseException] = []
        quiet_listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
        quiet_port = quiet_listener.extra(anyio.abc.SocketAttribute.local_port)
        async with quiet_listener, anyio.create_task_group() as quiet_server:
            quiet_server.start_soon(quiet_listener.serve, lambda stream: anyio.sleep_forever())
            quiet = plain_stream(await anyio.connect_tcp("127.0.0.1", quiet_port))
            async with anyio.create_task_group() as waiters:
                waiters.start_soon(receive_from, quiet, errors)
                await anyio.wait_all_tasks_blocked()
                with pytest.raises(anyio.BusyResourceError):
                    await quiet.receive()
                await quiet.aclose()  # the waiting receiver is woken by the close
            assert [type(e) for e in errors] == [anyio.ClosedResourceError]
            quiet_server.cancel_scope.cancel()
        tg.cancel_scope.cancel()


async def receive_from(stream: anyio.abc.ByteStream, errors: list[BaseException]) -> None:
    try:
        await stream.receive()
    except Exception as exc:
        errors.append(exc)


def test_on_asyncio_the_client_keeps_anyios_stream() -> None:
    """An asyncio program embedding mailcore sends through anyio's stream (the plain
    stream is Trio's): a whole session against the sink, on asyncio."""

    async def session() -> tuple[type, bool]:
        sink = Sink()
        async with anyio.create_task_group() as tg:
            port = await tg.start(sink.serve)
            async with await SmtpConnection.open(relay(port)) as conn:
                kind = type(conn._stream)
                outcome = await conn.send("a@x.test", ["b@y.test"], CONTENT)
            tg.cancel_scope.cancel()
        return kind, outcome.accepted("b@y.test")

    kind, accepted = anyio.run(session, backend="asyncio")
    assert accepted and kind is not PlainTrioStream
