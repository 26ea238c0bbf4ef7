"""The server's sans-IO machine, and the two machines against each other: dot-stuffing,
SMTP smuggling, command sequencing."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailcore.smtp import (
    NEED_DATA,
    Bdat,
    ClientProtocol,
    Command,
    CommandRejected,
    ConnectionClosed,
    Data,
    DataStart,
    Ehlo,
    Hello,
    Helo,
    LocalProtocolError,
    Mail,
    MailFrom,
    Message,
    MessageReceived,
    Noop,
    NoopRequested,
    Quit,
    QuitRequested,
    Rcpt,
    RcptTo,
    Reply,
    ResetRequested,
    Response,
    Rset,
    ServerEvent,
    ServerProtocol,
    ServerState,
    StartTlsRequested,
    encode_message,
    normalize_newlines,
)


def events(server: ServerProtocol, data: bytes = b"", *, answer: bool = True) -> list[ServerEvent]:
    """Feed ``data``, answer every event with the default reply, return the events."""
    if data:
        server.receive_data(data)
    out: list[ServerEvent] = []
    for _ in range(10_000):
        event = server.next_event()
        if event is NEED_DATA or isinstance(event, ConnectionClosed):
            return out
        out.append(event)
        if not answer:
            return out
        server.send(server.default_reply(event))
    raise AssertionError("unbounded")


def in_data(**kwargs: int) -> ServerProtocol:
    server = ServerProtocol("mx.test", **kwargs)  # type: ignore[arg-type]
    server.send(Reply.of(220, "mx.test ESMTP"))
    got = events(server, b"EHLO c.test\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n")
    assert [type(e) for e in got] == [Hello, MailFrom, RcptTo, DataStart]
    assert server.state is ServerState.DATA
    return server


def normalized(content: bytes) -> bytes:
    """Test oracle, written independently of the code under test."""
    out = bytearray()
    i = 0
    while i < len(content):
        b = content[i : i + 1]
        if b == b"\r" and content[i + 1 : i + 2] == b"\n":
            out += b"\r\n"
            i += 2
        elif b in (b"\r", b"\n"):
            out += b"\r\n"
            i += 1
        else:
            out += b
            i += 1
    if out and not out.endswith(b"\r\n"):
        out += b"\r\n"
    return bytes(out)


tricky = st.lists(
    st.sampled_from(
        [
            b".",
            b"..",
            b"\r",
            b"\n",
            b"\r\n",
            b".\r\n",
            b"\r\n.\r\n",
            b"\n.\n",
            b"\r.\r",
            b"\r\n.\r",
            b"\r\n.\n",
            b"\n.\r\n",
            b"MAIL FROM:<evil@x.test>\r\n",
            b"RCPT TO:<victim@y.test>\r\n",
            b"DATA\r\n",
            b"QUIT\r\n",
            b"a",
            b"\xc3\xa9",
            b"\x00",
        ]
    ),
    max_size=40,
).map(b"".join)


@settings(max_examples=300, deadline=None)
@given(
    content=st.one_of(tricky, st.binary(max_size=300)),
    cuts=st.lists(st.integers(0, 10_000), max_size=20),
)
def test_message_round_trip_is_byte_exact_and_unsmugglable(content: bytes, cuts: list[int]) -> None:
    wire = encode_message(content) + b"QUIT\r\n"
    server = in_data()
    points = sorted({c % (len(wire) + 1) for c in cuts})
    received: list[ServerEvent] = []
    for a, b in zip([0, *points], [*points, len(wire)], strict=True):
        if a != b:
            received += events(server, wire[a:b])
    assert received == [
        MessageReceived(normalized(content), "a@x.test", ("b@y.test",)),
        QuitRequested(),
    ]
    [message, _] = received
    assert isinstance(message, MessageReceived)
    assert message.content == normalized(content)  # the content is compared too


@settings(max_examples=300, deadline=None)
@given(
    content=st.binary(max_size=300)
    | st.lists(st.sampled_from([b"a", b".", b"\r", b"\n", b"\r\n"])).map(b"".join)
)
def test_framing_matches_the_oracle_and_clean_content_is_not_copied(content: bytes) -> None:
    clean = normalized(content)
    assert normalize_newlines(content) == clean
    assert normalize_newlines(clean) is clean  # the engine hands back the same object
    assert normalize_newlines(bytearray(content)) == clean
    assert encode_message(content) == (
        b"." * clean.startswith(b".") + clean.replace(b"\r\n.", b"\r\n..") + b".\r\n"
    )


def test_encode_message_examples() -> None:
    assert encode_message(b"") == b".\r\n"
    assert encode_message(b"a") == b"a\r\n.\r\n"
    assert encode_message(b".a\n.\n..\r\nb\r") == b"..a\r\n..\r\n...\r\nb\r\n.\r\n"
    assert encode_message(b"a\r\r\nb") == b"a\r\n\r\nb\r\n.\r\n"
    assert (
        encode_message(b"x\r\n.\r\nMAIL FROM:<e@x>\r\n") == b"x\r\n..\r\nMAIL FROM:<e@x>\r\n.\r\n"
    )


@pytest.mark.parametrize(
    "smuggled",
    [
        b"\n.\n",  # bare LF ends (Cisco, some MTAs)
        b"\r.\r",  # bare CR
        b"\r\n.\n",
        b"\n.\r\n",
        b"\r.\r\n",
        b"\r\n.\r",
    ],
)
def test_raw_smuggling_attempts_stay_content(smuggled: bytes) -> None:
    """A client that does *not* dot-stuff tries to end the data early and slip commands
    in: the server sees one message holding them."""
    server = in_data()
    body = b"Subject: hi\r\n\r\nhello" + smuggled
    body += b"MAIL FROM:<evil@x.test>\r\nRCPT TO:<victim@y.test>\r\nDATA\r\nforged\r\n"
    got = events(server, body + b".\r\nQUIT\r\n")
    assert [type(e) for e in got] == [MessageReceived, QuitRequested]
    message = got[0]
    assert isinstance(message, MessageReceived)
    assert b"MAIL FROM:<evil@x.test>\r\n" in message.content
    assert b"\r\n" in message.content and b"\r\r" not in message.content
    assert message.content.count(b"\r") == message.content.count(b"\n")


def test_message_end_split_at_every_byte() -> None:
    server = in_data()
    got: list[ServerEvent] = []
    for byte in b"line\r\n..dot\r\n.\r\nNOOP\r\n":
        got += events(server, bytes([byte]))
    assert got == [
        MessageReceived(b"line\r\n.dot\r\n", "a@x.test", ("b@y.test",)),
        NoopRequested(),
    ]


def test_oversized_message_is_refused_and_the_session_goes_on() -> None:
    server = in_data(max_size=10)
    got = events(server, b"0123456789abcdef\r\n.\r\nRSET\r\n", answer=False)
    [rejected] = got
    assert isinstance(rejected, CommandRejected) and rejected.reply.code == 552
    server.send(rejected.reply)
    assert events(server) == [ResetRequested()]


def test_sequence_and_syntax_errors() -> None:
    server = ServerProtocol("mx.test", max_size=1000)
    with pytest.raises(LocalProtocolError):
        server.next_event()  # greet first
    server.send(Reply.of(220, "hi"))

    def one(line: bytes) -> ServerEvent:
        [event] = events(server, line)
        return event

    def code(line: bytes) -> int:
        event = one(line)
        assert isinstance(event, CommandRejected), event
        return event.reply.code

    assert code(b"MAIL FROM:<a@x.test>\r\n") == 503  # before EHLO
    assert code(b"FOO\r\n") == 500
    for line, control in ((b"NOOP\x01\r\n", True), (b"NO\x00OP\r\n", True), (b"X\tY\r\n", False)):
        event = one(line)
        assert isinstance(event, CommandRejected) and event.reply.code == 500
        assert ("Control character" in event.reply.text) is control  # a tab is not one
    assert code(b"EHLO\r\n") == 501
    assert code(b"STARTTLS\r\n") == 503  # not offered
    assert one(b"EHLO c.test\r\n") == Hello("c.test", extended=True)
    assert code(b"RCPT TO:<b@y.test>\r\n") == 503
    assert code(b"DATA\r\n") == 503
    assert code(b"MAIL FROM:<a@x.test> SIZE=5000\r\n") == 552
    assert code(b"MAIL FROM:<a@x.test> FOO=1\r\n") == 555
    assert code("MAIL FROM:<ü@x.test>\r\n".encode()) == 553
    assert code(b"MAIL TO:<a@x.test>\r\n") == 501
    assert one(b"MAIL FROM:<> BODY=8BITMIME SIZE=10\r\n") == MailFrom(
        "", {"BODY": "8BITMIME", "SIZE": "10"}
    )
    assert code(b"MAIL FROM:<a@x.test>\r\n") == 503  # nested
    assert code(b"DATA\r\n") == 554  # no recipient yet
    assert code("RCPT TO:<ü@y.test>\r\n".encode()) == 553
    assert code(b"RCPT TO:<>\r\n") == 501
    assert one(b"rcpt to: <b@y.test>\r\n") == RcptTo("b@y.test", {})
    assert server.recipients == ("b@y.test",)
    assert one(b"RSET\r\n") == ResetRequested()
    assert server.mail_from is None and server.recipients == ()
    assert one(b"QUIT\r\n") == QuitRequested()
    assert server.state is ServerState.CLOSED
    assert server.next_event() == ConnectionClosed()


def test_refused_recipient_is_not_counted() -> None:
    server = ServerProtocol()
    server.send(Reply.of(220, "hi"))
    events(server, b"EHLO c.test\r\nMAIL FROM:<a@x.test>\r\n")
    server.receive_data(b"RCPT TO:<b@bounce.test>\r\nDATA\r\n")
    event = server.next_event()
    assert isinstance(event, RcptTo)
    with pytest.raises(LocalProtocolError):
        server.next_event()  # answer first
    server.send(Reply.of(550, "5.1.1 no such user"))
    [event] = events(server, answer=False)
    assert isinstance(event, CommandRejected) and event.reply.code == 554


def test_ehlo_advertises_extensions_and_starttls_drops_pipelined_commands() -> None:
    server = ServerProtocol("mx.test", starttls=True)
    server.send(Reply.of(220, "hi"))
    [hello] = events(server, b"EHLO c.test\r\n", answer=False)
    reply = server.default_reply(hello)
    server.send(reply)
    assert reply.lines[1:] == (
        "PIPELINING",
        f"SIZE {server.max_size}",
        "8BITMIME",
        "SMTPUTF8",
        "ENHANCEDSTATUSCODES",
        "CHUNKING",
        "STARTTLS",
    )
    got = events(server, b"STARTTLS\r\nMAIL FROM:<injected@x.test>\r\n")
    assert got == [StartTlsRequested()]  # the injected MAIL was discarded
    assert server.tls_active
    [hello] = events(server, b"EHLO c.test\r\n", answer=False)
    assert "STARTTLS" not in server.default_reply(hello).lines
    helo = ServerProtocol()
    helo.send(Reply.of(220, "hi"))
    [event] = events(helo, b"HELO c.test\r\n", answer=False)
    assert helo.default_reply(event) == Reply(250, ("localhost",))


# -- the two machines against each other -------------------------------------------------

COMMANDS: list[Command] = [
    Ehlo("c.test"),
    Helo("c.test"),
    Mail("a@x.test"),
    Rcpt("b@y.test"),
    Rcpt("c@y.test"),
    Data(),
    Message(b"hello\n.\nworld"),
    Bdat(b"hello\n.", last=False),
    Bdat(b"\nworld"),
    Rset(),
    Noop(),
    Quit(),
]


def allowed(client: ClientProtocol, command: Command) -> bool:
    """Whether the client's state table lets ``command`` through now (no state change)."""
    try:
        client._check_turn(command)
    except LocalProtocolError:
        return False
    return True


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_what_the_client_allows_a_correct_server_accepts(data: st.DataObject) -> None:
    """Random sessions, DATA and BDAT, each step drawn from what the client's state table
    lets through, pipelined or not: all of it is in sequence for the server, nothing is
    refused for sequence or syntax, and each message arrives as sent."""
    client, server = ClientProtocol(), ServerProtocol("mx.test")
    client.receive_data(server.send(Reply.of(220, "mx.test ESMTP")))
    client.next_event()
    replies: list[Reply] = []
    sent: list[bytes] = []  # the content of each message sent, in order
    received: list[MessageReceived] = []
    chunks: list[bytes] = []  # of the BDAT message being sent

    def flush() -> None:
        while (event := server.next_event()) is not NEED_DATA:
            if isinstance(event, ConnectionClosed):
                break
            assert not isinstance(event, CommandRejected), event
            if isinstance(event, MessageReceived):
                received.append(event)
            client.receive_data(server.send(server.default_reply(event)))
        while (answer := client.next_event()) is not NEED_DATA:
            if isinstance(answer, ConnectionClosed):
                break
            assert isinstance(answer, Response)
            replies.append(answer.reply)

    for _ in range(data.draw(st.integers(1, 60), label="steps")):
        # the transaction's commands weigh more, and QUIT ends the session: rarely
        pool = COMMANDS[:-1] + COMMANDS[2:9] * 3 if data.draw(st.integers(0, 29)) else [Quit()]
        choices = [c for c in pool if allowed(client, c)]
        if not choices:
            flush()  # e.g. DATA awaits its 354
            continue
        command = data.draw(st.sampled_from(choices))
        server.receive_data(client.send(command))
        match command:
            case Message():
                sent.append(b"hello\r\n.\r\nworld\r\n")
            case Bdat(chunk=chunk, last=last):
                chunks.append(chunk)
                if last:
                    sent.append(normalize_newlines(b"".join(chunks)))
                    chunks.clear()
            case Mail() | Rset():
                chunks.clear()
            case _:
                pass
        if not client.pipelining or data.draw(st.booleans(), label="flush"):
            flush()
        if server.state is ServerState.CLOSED:
            break
    flush()
    assert client.outstanding == ()
    assert all(r.is_positive for r in replies), replies
    assert [m.content for m in received] == sent
    assert len(sent) == sum(1 for r in replies if r.lines == ("2.0.0 OK: queued",))
