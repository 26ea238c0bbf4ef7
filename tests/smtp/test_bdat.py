"""BDAT / CHUNKING (RFC 3030): the client machine's framing and state table, the server
machine's chunk reading, the two against each other under any split, and the transport
against real loopback servers."""

from __future__ import annotations

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailcore.smtp import (
    NEED_DATA,
    Bdat,
    ChunkReceived,
    ClientEvent,
    ClientProtocol,
    Command,
    CommandRejected,
    ConnectionClosed,
    Data,
    Ehlo,
    Greeting,
    Hello,
    LocalProtocolError,
    Mail,
    MailFrom,
    MessageReceived,
    NoopRequested,
    Phase,
    QuitRequested,
    Rcpt,
    RcptTo,
    RelayConfig,
    Reply,
    ResetRequested,
    Response,
    Rset,
    ServerEvent,
    ServerProtocol,
    ServerState,
    Sink,
    SmtpConnection,
    encode_message,
    normalize_newlines,
)

from .conftest import scripted_server
from .test_server_protocol import events, in_data, normalized, tricky

EHLO = b"250-mx.test\r\n250-PIPELINING\r\n250-SIZE 100000\r\n250-CHUNKING\r\n250 8BITMIME\r\n"


def drain(proto: ClientProtocol) -> list[ClientEvent]:
    events: list[ClientEvent] = []
    while (event := proto.next_event()) is not NEED_DATA:
        events.append(event)
        if isinstance(event, ConnectionClosed):
            break
    return events


def ready(ehlo: bytes = EHLO) -> ClientProtocol:
    proto = ClientProtocol()
    proto.receive_data(b"220 mx.test ESMTP\r\n")
    drain(proto)
    proto.send(Ehlo("client.test"))
    proto.receive_data(ehlo)
    drain(proto)
    assert proto.phase is Phase.READY
    return proto


def refused(proto: ClientProtocol, command: Command) -> None:
    with pytest.raises(LocalProtocolError):
        proto.send(command)


def codes(events: list[ClientEvent]) -> list[int]:
    return [e.reply.code for e in events if isinstance(e, Response)]


# -- the client machine ----------------------------------------------------------------


def test_bdat_framing_examples() -> None:
    proto = ready()
    assert proto.send(Mail("a@x.test", size=3)) == b"MAIL FROM:<a@x.test> SIZE=3\r\n"
    assert proto.send(Rcpt("b@y.test")) == b"RCPT TO:<b@y.test>\r\n"
    # no dot-stuffing, no terminating dot; newlines normalised, a final CRLF added
    assert proto.send(Bdat(b".x\n.\r\n.")) == b"BDAT 10 LAST\r\n.x\r\n.\r\n.\r\n"
    assert proto.phase is Phase.READY
    proto.receive_data(b"250 ok\r\n250 ok\r\n250 2.0.0 queued\r\n")
    assert codes(drain(proto)) == [250, 250, 250]
    proto.send(Mail("a@x.test"))
    proto.send(Rcpt("b@y.test"))
    assert proto.send(Bdat(b"")) == b"BDAT 0 LAST\r\n"


def test_chunks_are_normalised_across_their_boundaries() -> None:
    proto = ready()
    proto.send(Mail("a@x.test"))
    proto.send(Rcpt("b@y.test"))
    assert proto.send(Bdat(b"one\r", last=False)) == b"BDAT 5\r\none\r\n"
    assert proto.phase is Phase.CHUNKS
    assert proto.send(Bdat(b"\ntwo", last=False)) == b"BDAT 3\r\ntwo"  # the CRLF's LF
    assert proto.send(Bdat(b"", last=False)) == b"BDAT 0\r\n"
    assert proto.send(Bdat(b"", last=True)) == b"BDAT 2 LAST\r\n\r\n"  # the final CRLF
    assert proto.phase is Phase.READY


def test_bdat_state_table() -> None:
    no_chunking = ready(b"250-mx.test\r\n250 PIPELINING\r\n")
    no_chunking.send(Mail("a@x.test"))
    no_chunking.send(Rcpt("b@y.test"))
    refused(no_chunking, Bdat(b"x"))  # CHUNKING not offered

    proto = ready()
    refused(proto, Bdat(b"x"))  # no transaction
    proto.send(Mail("a@x.test"))
    refused(proto, Bdat(b"x"))  # no RCPT yet
    proto.send(Rcpt("b@y.test"))
    proto.send(Bdat(b"part", last=False))
    refused(proto, Data())  # DATA and BDAT do not mix
    refused(proto, Rcpt("c@y.test"))
    refused(proto, Mail("a@x.test"))
    proto.send(Bdat(b"more", last=False))  # chunks pipeline
    proto.receive_data(b"250 ok\r\n250 ok\r\n250 2.0.0 4 octets\r\n550 5.3.0 no\r\n")
    assert codes(drain(proto)) == [250, 250, 250, 550]
    refused(proto, Bdat(b"end"))  # a chunk was refused: RSET first (RFC 3030)
    proto.send(Rset())
    assert proto.phase is Phase.READY
    proto.receive_data(b"250 ok\r\n")
    drain(proto)
    proto.send(Mail("a@x.test"))  # a new transaction may start
    proto.send(Rcpt("b@y.test"))
    proto.send(Bdat(b"end"))
    proto.send(Mail("a@x.test"))  # BDAT LAST does not end a pipelining group
    proto.receive_data(b"250 ok\r\n250 ok\r\n554 5.7.1 spam\r\n250 ok\r\n")
    assert codes(drain(proto)) == [250, 250, 554, 250]
    proto.send(Rcpt("b@y.test"))  # the client had already moved on: no RSET demanded


def test_last_chunk_refused_needs_rset_before_the_next_mail() -> None:
    proto = ready()
    for command in (Mail("a@x.test"), Rcpt("b@y.test"), Bdat(b"x")):
        proto.send(command)
    proto.receive_data(b"250 ok\r\n250 ok\r\n451 4.3.0 try later\r\n")
    assert codes(drain(proto)) == [250, 250, 451]
    refused(proto, Mail("a@x.test"))
    proto.send(Rset())
    proto.send(Mail("a@x.test"))


def test_failed_rcpts_with_a_pipelined_chunk() -> None:
    """Every RCPT failed but the chunk was already on its way: the server reads it and
    refuses it (RFC 3030), each command still gets its own reply."""
    proto = ready()
    plan: list[Command] = [Mail("a@x.test"), Rcpt("b@y.test"), Rcpt("c@y.test"), Bdat(b"hi")]
    for command in plan:
        proto.send(command)
    proto.receive_data(b"250 ok\r\n550 5.1.1 no\r\n451 4.7.1 later\r\n554 5.5.1 no valid rcpt\r\n")
    events = drain(proto)
    assert [(e.command, e.reply.code) for e in events if isinstance(e, Response)] == list(
        zip(plan, [250, 550, 451, 554], strict=True)
    )
    refused(proto, Mail("a@x.test"))
    proto.send(Rset())


# -- hypothesis: framing -----------------------------------------------------------------

contents = st.one_of(tricky, st.binary(max_size=400))


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


def frames(wire: bytes) -> list[tuple[int, bool, bytes]]:
    """Parse ``BDAT n [LAST]`` frames (test oracle, independent of the server machine)."""
    out: list[tuple[int, bool, bytes]] = []
    while wire:
        line, _, wire = wire.partition(b"\r\n")
        verb, size, *last = line.split(b" ")
        assert verb == b"BDAT"
        n = int(size)
        out.append((n, last == [b"LAST"], wire[:n]))
        assert len(wire) >= n
        wire = wire[n:]
    return out


@settings(max_examples=300, deadline=None)
@given(content=contents, cuts=st.lists(st.integers(0, 10_000), max_size=8))
def test_any_chunking_of_any_content_frames_the_normalised_bytes(
    content: bytes, cuts: list[int]
) -> None:
    proto = ready()
    proto.send(Mail("a@x.test"))
    proto.send(Rcpt("b@y.test"))
    pieces = split(content, cuts)
    wire = b"".join(proto.send(Bdat(p, last=i == len(pieces) - 1)) for i, p in enumerate(pieces))
    parsed = frames(wire)
    assert [last for _, last, _ in parsed] == [False] * (len(pieces) - 1) + [True]
    assert all(n == len(chunk) for n, _, chunk in parsed)
    payload = b"".join(chunk for _, _, chunk in parsed)
    assert payload == normalize_newlines(content) == normalized(content)
    # what DATA would carry, once un-dot-stuffed: the same bytes by either route
    assert encode_message(content) == (
        b"." * payload.startswith(b".") + payload.replace(b"\r\n.", b"\r\n..") + b".\r\n"
    )


# -- the server machine ------------------------------------------------------------------


def answer_all(server: ServerProtocol, data: bytes = b"", **overrides: Reply) -> list[ServerEvent]:
    """Feed ``data``; answer each event with its default reply, or ``overrides[type]``."""
    if data:
        server.receive_data(data)
    out: list[ServerEvent] = []
    while (event := server.next_event()) is not NEED_DATA:
        if isinstance(event, ConnectionClosed):
            break
        out.append(event)
        server.send(overrides.get(type(event).__name__, server.default_reply(event)))
    return out


def greeted(**kwargs: bool) -> ServerProtocol:
    server = ServerProtocol("mx.test", max_size=1000, **kwargs)
    server.send(Reply.of(220, "mx.test ESMTP"))
    [hello] = answer_all(server, b"EHLO c.test\r\n")
    assert isinstance(hello, Hello)
    return server


def rejected(event: ServerEvent) -> int:
    assert isinstance(event, CommandRejected), event
    return event.reply.code


def test_server_reads_chunks_and_the_last_one_ends_the_message() -> None:
    server = greeted()
    got = answer_all(
        server,
        b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\n"
        b"BDAT 6\r\nRSET\r\nBDAT 12 last\r\nQUIT\r\n.\r\nx\r\nNOOP\r\n",
    )
    assert got == [
        MailFrom("a@x.test", {}),
        RcptTo("b@y.test", {}),
        ChunkReceived(6),
        MessageReceived(b"RSET\r\nQUIT\r\n.\r\nx\r\n", "a@x.test", ("b@y.test",), chunked=True),
        NoopRequested(),
    ]  # command-like bytes inside the chunks are content: nothing is smuggled
    assert server.mail_from is None and server.recipients == ()


def test_server_consumes_a_refused_chunk() -> None:
    server = greeted()
    # every RCPT refused, the chunk already pipelined: read, discarded, refused
    server.receive_data(b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nBDAT 15 LAST\r\nMAIL FROM")
    got = answer_all(server, RcptTo=Reply.of(550, "5.1.1 no such user"))
    assert [type(e) for e in got] == [MailFrom, RcptTo]
    assert server.state is ServerState.CHUNK
    got = answer_all(server, b":<x>\r\nNOOP\r\n")
    assert rejected(got[0]) == 554 and got[1:] == [NoopRequested()]
    # no MAIL: 503, and the chunk is still skipped
    assert [rejected(e) for e in answer_all(server, b"BDAT 4\r\nDATABDAT 0 LAST\r\n")] == [503, 503]
    assert answer_all(server, b"RSET\r\n") == [ResetRequested()]


def test_a_refused_chunk_ends_the_transaction() -> None:
    server = greeted()
    got = answer_all(
        server,
        b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nBDAT 2\r\nabBDAT 2 LAST\r\ncd",
        ChunkReceived=Reply.of(452, "4.3.1 disk full"),
    )
    assert [type(e) for e in got] == [MailFrom, RcptTo, ChunkReceived, CommandRejected]
    assert rejected(got[-1]) == 503  # the pipelined chunk after the failure: bad sequence
    assert server.mail_from is None


def test_server_bdat_errors() -> None:
    server = greeted()
    assert rejected(answer_all(server, b"BDAT 3 LAST\r\nabc")[0]) == 503  # no MAIL
    answer_all(server, b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\n")
    got = answer_all(server, b"BDAT 2\r\nabDATA\r\n")
    assert got[0] == ChunkReceived(2) and rejected(got[1]) == 503  # DATA after BDAT
    assert answer_all(server, b"RSET\r\n") == [ResetRequested()]
    answer_all(server, b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\n")
    big = b"BDAT 600\r\n" + b"x" * 600 + b"BDAT 600 LAST\r\n" + b"y" * 600 + b"NOOP\r\n"
    got = answer_all(server, big)  # max_size=1000
    assert got[0] == ChunkReceived(600)
    assert rejected(got[1]) == 552 and got[2:] == [NoopRequested()]
    assert server.mail_from is None
    # a size we cannot parse: where the chunk ends is unknown, the session ends
    answer_all(server, b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\n")
    assert rejected(answer_all(server, b"BDAT 12x LAST\r\nNOOP\r\n")[0]) == 501
    assert server.state is ServerState.CLOSED
    huge = greeted()
    assert rejected(answer_all(huge, b"BDAT 1234567890123456\r\n")[0]) == 501


def test_server_without_chunking_refuses_bdat_and_does_not_offer_it() -> None:
    server = ServerProtocol("mx.test", chunking=False, pipelining=False)
    server.send(Reply.of(220, "hi"))
    server.receive_data(b"EHLO c.test\r\n")
    hello = server.next_event()
    assert isinstance(hello, Hello)
    reply = server.default_reply(hello)
    server.send(reply)
    assert "CHUNKING" not in reply.lines and "PIPELINING" not in reply.lines
    got = answer_all(server, b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nBDAT 4 LAST\r\n")
    assert rejected(got[-1]) == 502


def test_eof_in_a_chunk() -> None:
    server = greeted()
    answer_all(server, b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nBDAT 10 LAST\r\nabc")
    server.receive_data(b"")
    assert server.next_event() == ConnectionClosed()


# -- the two machines against each other, any split -------------------------------------


def exchange(
    content: bytes, chunk_cuts: list[int], wire_cuts: list[int], reply_cuts: list[int]
) -> tuple[list[ServerEvent], list[ClientEvent]]:
    """Greeting, EHLO, then MAIL, RCPT and the chunks pipelined; the client's bytes reach
    the server split at ``wire_cuts``, the server's replies the client at ``reply_cuts``."""
    client, server = ClientProtocol(), ServerProtocol("mx.test")
    client.receive_data(server.send(Reply.of(220, "mx.test ESMTP")))
    assert isinstance(client.next_event(), Greeting)
    server_events: list[ServerEvent] = []
    replies = bytearray()

    def to_server(data: bytes) -> None:
        for piece in split(data, wire_cuts):
            if not piece:
                continue
            server.receive_data(piece)
            while (event := server.next_event()) is not NEED_DATA:
                server_events.append(event)
                replies.extend(server.send(server.default_reply(event)))

    to_server(client.send(Ehlo("c.test")))
    client.receive_data(bytes(replies))
    replies.clear()
    assert codes(drain(client)) == [250] and client.supports("CHUNKING")
    pieces = split(content, chunk_cuts)
    out = client.send(Mail("a@x.test")) + client.send(Rcpt("b@y.test"))
    out += b"".join(client.send(Bdat(p, last=i == len(pieces) - 1)) for i, p in enumerate(pieces))
    to_server(out)
    client_events: list[ClientEvent] = []
    for piece in split(bytes(replies), reply_cuts):
        if piece:
            client.receive_data(piece)
            client_events += drain(client)
    return server_events, client_events


@settings(max_examples=300, deadline=None)
@given(
    content=contents,
    chunk_cuts=st.lists(st.integers(0, 10_000), max_size=5),
    wire_cuts=st.lists(st.integers(0, 10_000), max_size=20),
    reply_cuts=st.lists(st.integers(0, 10_000), max_size=10),
)
def test_round_trip_gives_the_same_bytes_as_data(
    content: bytes, chunk_cuts: list[int], wire_cuts: list[int], reply_cuts: list[int]
) -> None:
    server_events, client_events = exchange(content, chunk_cuts, wire_cuts, reply_cuts)
    chunks = len(split(content, chunk_cuts))
    assert [type(e) for e in server_events] == [Hello, MailFrom, RcptTo] + [ChunkReceived] * (
        chunks - 1
    ) + [MessageReceived]
    message = server_events[-1]
    assert isinstance(message, MessageReceived) and message.chunked
    assert message.content == normalized(content)
    # the same content by DATA (dot-stuffed, split the same way) arrives identical
    by_data = in_data()
    got: list[ServerEvent] = []
    for piece in split(encode_message(content), wire_cuts):
        if piece:
            got += events(by_data, piece)
    assert got == [MessageReceived(message.content, "a@x.test", ("b@y.test",), chunked=False)]
    assert (message.mail_from, message.recipients) == ("a@x.test", ("b@y.test",))
    assert [type(e.command) for e in client_events if isinstance(e, Response)] == [
        Mail,
        Rcpt,
    ] + [Bdat] * chunks
    assert codes(client_events) == [250] * (2 + chunks)


# -- the transport -----------------------------------------------------------------------


def relay(port: int, **kwargs: object) -> RelayConfig:
    options: dict[str, object] = {"host": "127.0.0.1", "port": port, "tls": "none"}
    options.update(kwargs)
    return RelayConfig(**options)  # type: ignore[arg-type]


CONTENT = b"Subject: test\r\n\r\n.leading dot\nbare LF\rbare CR\r\n.\r\nend"


@pytest.mark.anyio
async def test_one_write_and_one_round_trip_per_message() -> None:
    async with (
        scripted_server() as server,
        await SmtpConnection.open(relay(server.port)) as conn,
    ):
        assert conn.chunking and conn.pipelining
        outcome = await conn.send("a@x.test", ["b@y.test", "c@y.test"], b".x\n")
        assert outcome.accepted("b@y.test") and outcome.accepted("c@y.test")
        assert outcome.data is not None and outcome.data.code == 250
    batch = [chunk for chunk in server.raw if b"MAIL FROM" in chunk]
    assert batch == [b"MAIL FROM:<a@x.test> SIZE=4\r\nRCPT TO:<b@y.test>\r\n"
                     b"RCPT TO:<c@y.test>\r\nBDAT 4 LAST\r\n.x\r\n"]  # fmt: skip
    assert [type(e) for e in server.log] == [
        Hello,
        MailFrom,
        RcptTo,
        RcptTo,
        MessageReceived,
        QuitRequested,
    ]


@pytest.mark.anyio
async def test_bdat_with_the_sink_rules_and_reuse() -> None:
    rules = [("*@bounce.test", 550, "5.1.1 no such user"), ("*@busy.test", 451, "4.7.1 later")]
    sink = Sink(keep=True, rules=rules)
    async with anyio.create_task_group() as tg:
        port = await tg.start(sink.serve)
        async with await SmtpConnection.open(relay(port)) as conn:
            assert conn.chunking
            for i in range(30):
                outcome = await conn.send(
                    "a@x.test", [f"ok{i}@y.test", "x@bounce.test", "y@busy.test"], CONTENT
                )
                assert outcome.statuses == {
                    f"ok{i}@y.test": "delivered",
                    "x@bounce.test": "bounced",
                    "y@busy.test": "deferred",
                }
            # every RCPT refused: the pipelined chunk is read and refused, then RSET
            outcome = await conn.send("a@x.test", ["x@bounce.test", "y@busy.test"], CONTENT)
            assert outcome.statuses == {"x@bounce.test": "bounced", "y@busy.test": "deferred"}
            assert outcome.data is not None and outcome.data.code == 554
            assert not conn.broken
            assert (await conn.send("a@x.test", ["z@y.test"], b"last")).accepted("z@y.test")
        tg.cancel_scope.cancel()
    assert sink.messages == 31 and sink.recipients == 31
    assert sink.received[0] == ("a@x.test", ("ok0@y.test",), normalize_newlines(CONTENT))


@pytest.mark.anyio
@pytest.mark.parametrize("how", ["config", "url"])
async def test_chunking_can_be_turned_off(how: str) -> None:
    async with scripted_server() as server:
        config = (
            relay(server.port, chunking=False)
            if how == "config"
            else RelayConfig.from_url(f"smtp://127.0.0.1:{server.port}?tls=none&chunking=no")
        )
        async with await SmtpConnection.open(config) as conn:
            assert not conn.chunking
            assert (await conn.send("a@x.test", ["b@y.test"], CONTENT)).accepted("b@y.test")
    assert b"".join(server.raw).count(b"\r\nDATA\r\n") == 1
    assert b"BDAT" not in b"".join(server.raw)
    [message] = [e for e in server.log if isinstance(e, MessageReceived)]
    assert not message.chunked and message.content == normalize_newlines(CONTENT)
    with pytest.raises(ValueError):
        RelayConfig.from_url("smtp://h?chunking=maybe")


@pytest.mark.anyio
async def test_chunking_without_pipelining_waits_for_each_reply() -> None:
    def refuse_c(proto: ServerProtocol, event: ServerEvent) -> Reply | None:
        if isinstance(event, RcptTo) and event.address.startswith("c@"):
            return Reply.of(550, "5.1.1 no")
        return None

    async with (
        scripted_server(refuse_c, pipelining=False) as server,
        await SmtpConnection.open(relay(server.port)) as conn,
    ):
        assert conn.chunking and not conn.pipelining
        outcome = await conn.send("a@x.test", ["b@y.test", "c@y.test"], CONTENT)
        assert outcome.statuses == {"b@y.test": "delivered", "c@y.test": "bounced"}
        outcome = await conn.send("a@x.test", ["c@y.test"], CONTENT)  # no BDAT sent
        assert outcome.data is None and outcome.status("c@y.test") == "bounced"
    commands = [chunk for chunk in server.raw if chunk[:4] in (b"MAIL", b"RCPT", b"BDAT")]
    assert [c[:4] for c in commands] == [b"MAIL", b"RCPT", b"RCPT", b"BDAT", b"MAIL", b"RCPT"]
    [message] = [e for e in server.log if isinstance(e, MessageReceived)]
    assert message.chunked and message.recipients == ("b@y.test",)


@pytest.mark.anyio
@pytest.mark.parametrize("chunking", [True, False])
async def test_a_failed_transaction_is_reset_in_the_next_ones_write(chunking: bool) -> None:
    def refuse_x(proto: ServerProtocol, event: ServerEvent) -> Reply | None:
        if isinstance(event, RcptTo) and event.address.startswith("x@"):
            return Reply.of(550, "5.1.1 no such user")
        return None

    async with scripted_server(refuse_x, chunking=chunking) as server:
        async with await SmtpConnection.open(relay(server.port)) as conn:
            assert conn.chunking is chunking
            refused = await conn.send("a@x.test", ["x@y.test"], b"one")
            assert refused.status("x@y.test") == "bounced" and refused.data is not None
            assert refused.data.code == 554  # BDAT or DATA refused: no valid recipient
            ok = await conn.send("a@x.test", ["b@y.test"], b"two")
            assert ok.accepted("b@y.test")
            refused = await conn.send("a@x.test", ["x@y.test"], b"three")
            assert refused.status("x@y.test") == "bounced"
        assert not conn.broken  # QUIT went fine with the RSET still owed
    writes = [chunk for chunk in server.raw if chunk[:4] in (b"MAIL", b"RSET", b"QUIT")]
    # no round trip of its own: RSET leads the next write (none after the last one)
    assert [w[:10] for w in writes] == [
        b"MAIL FROM:",
        b"RSET\r\nMAIL",
        b"MAIL FROM:",
        b"QUIT\r\n",
    ]
    kinds = [type(e).__name__ for e in server.log if not isinstance(e, Hello)]
    assert kinds[:2] == ["MailFrom", "RcptTo"]
    assert kinds[3:6] == ["ResetRequested", "MailFrom", "RcptTo"]


@pytest.mark.anyio
async def test_reset_clears_the_owed_rset_once() -> None:
    async with (
        scripted_server(
            lambda p, e: Reply.of(451, "4.7.1 later") if isinstance(e, RcptTo) else None
        ) as server,
        await SmtpConnection.open(relay(server.port)) as conn,
    ):
        assert (await conn.send("a@x.test", ["b@y.test"], b"x")).status("b@y.test") == "deferred"
        assert (await conn.reset()).code == 250
        assert (await conn.send("a@x.test", ["b@y.test"], b"x")).status("b@y.test") == "deferred"
    resets = [e for e in server.log if isinstance(e, ResetRequested)]
    assert len(resets) == 1
