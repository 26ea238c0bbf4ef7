"""Pipelining across messages (SmtpConnection.send_many): the same outcomes as one send
after the other, fewer writes and round trips, and the right verdict for each message when
the connection breaks or the server says 421 in the middle of a pipeline. All against
servers on loopback built on our ServerProtocol."""

from __future__ import annotations

import itertools
import re
from collections import Counter, deque
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import anyio
import anyio.lowlevel
import pytest
from anyio.abc import ByteStream
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailcore.smtp import (
    NEED_DATA,
    Bdat,
    ClientProtocol,
    ConnectionClosed,
    Data,
    DataStart,
    Ehlo,
    Greeting,
    LocalProtocolError,
    Mail,
    MailFrom,
    Message,
    MessageReceived,
    Phase,
    QuitRequested,
    Rcpt,
    RcptTo,
    RelayConfig,
    Reply,
    Response,
    Rset,
    SendOutcome,
    ServerEvent,
    ServerProtocol,
    Sink,
    SmtpConnection,
    SmtpConnectionLost,
    SmtpError,
    SmtpTimeout,
    SmtpUntried,
    normalize_newlines,
)
from mailcore.smtp.client import _Prepared
from mailcore.smtp.faults import FaultPlan, fault_sink
from mailcore.smtp.protocol import check_address

from .conftest import DROP, HANG, Script, scripted_server

# -- a server whose answers are written in the addresses -----------------------------------
#
# "s451@x.test" as sender: MAIL gets 451; "r550-3@y.test": that RCPT gets 550; a content
# holding "final=554": the message gets 554 after its dot / last chunk. Any answer is a
# function of the message alone, so one send after the other and a pipeline must agree.

_CODE = re.compile(r"[sr](\d{3})")
_FINAL = re.compile(rb"final=(\d{3})")


def _coded(text: str) -> int | None:
    m = _CODE.match(text)
    return int(m[1]) if m else None


def scripted_reply(proto: ServerProtocol, event: ServerEvent) -> Reply | None:
    code: int | None = None
    if isinstance(event, MailFrom | RcptTo):
        code = _coded(event.address)
    elif isinstance(event, MessageReceived):
        m = _FINAL.search(event.content)
        code = int(m[1]) if m else None
    if code is None or code == 250:
        return None
    return Reply.of(code, f"scripted {code}")


@dataclass
class Splitting:
    port: int
    raw: list[bytes] = field(default_factory=list)
    messages: list[tuple[str, tuple[str, ...], bytes]] = field(default_factory=list)


@asynccontextmanager
async def splitting_server(
    cuts: Sequence[int], *, chunking: bool = True
) -> AsyncIterator[Splitting]:
    """The scripted answers, each batch of replies written in pieces cut at ``cuts``."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    record = Splitting(port=int(listener.extra(anyio.abc.SocketAttribute.local_port)))

    async def write(stream: ByteStream, out: bytearray) -> None:
        start = 0
        for cut in sorted({c % (len(out) + 1) for c in cuts}):
            if start < cut:
                await stream.send(bytes(out[start:cut]))
                await anyio.lowlevel.checkpoint()
                start = cut
        if start < len(out):
            await stream.send(bytes(out[start:]))
        out.clear()

    async def handle(stream: ByteStream) -> None:
        proto = ServerProtocol("split.test", chunking=chunking, pipelining=True)
        out = bytearray(proto.send(Reply.of(220, "split.test ESMTP")))
        try:
            while True:
                event = proto.next_event()
                if event is NEED_DATA:
                    await write(stream, out)
                    try:
                        data = await stream.receive()
                    except anyio.EndOfStream:
                        data = b""
                    record.raw.append(data)
                    proto.receive_data(data)
                    continue
                if isinstance(event, ConnectionClosed):
                    await write(stream, out)  # e.g. a 421
                    return
                reply = scripted_reply(proto, event) or proto.default_reply(event)
                if isinstance(event, MessageReceived) and reply.code == 250:  # taken
                    record.messages.append((event.mail_from, event.recipients, event.content))
                out += proto.send(reply)
                if isinstance(event, QuitRequested):
                    await write(stream, out)
                    return
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            pass
        finally:
            await anyio.aclose_forcefully(stream)

    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handle, tg)
        yield record
        tg.cancel_scope.cancel()


def relay(port: int, **kwargs: object) -> RelayConfig:
    options: dict[str, object] = {"host": "127.0.0.1", "port": port, "tls": "none"}
    options.update(kwargs)
    return RelayConfig(**options)  # type: ignore[arg-type]


Msg = tuple[str, list[str], bytes]


def summary(result: SendOutcome | SmtpError) -> object:
    """What must agree: codes of every reply (texts may carry queue ids), or the error."""
    if isinstance(result, SendOutcome):
        data = result.data.code if result.data is not None else None
        return (result.mail.code, tuple((r, reply.code) for r, reply in result.recipients), data)
    return type(result).__name__


async def one_by_one(port: int, messages: list[Msg], chunking: bool) -> list[object]:
    """What :meth:`SmtpConnection.send` gives, message after message, on one connection;
    after a 421 the rest would have been untried."""
    out: list[object] = []
    async with await SmtpConnection.open(relay(port, chunking=chunking)) as conn:
        for sender, rcpts, content in messages:
            if not conn.usable:
                out.append("SmtpUntried")
                continue
            try:
                out.append(summary(await conn.send(sender, rcpts, content)))
            except SmtpError as exc:
                out.append(summary(exc))
    return out


codes = st.sampled_from([250, 250, 250, 250, 451, 550])
message_st = st.builds(
    lambda mail, rcpts, final, body: (
        f"s{mail}@x.test",
        [f"r{code}-{i}@y.test" for i, code in enumerate(rcpts)],
        body + b"\nfinal=%d\n" % final,
    ),
    st.sampled_from([250, 250, 250, 250, 451, 550, 421]),
    st.lists(codes, min_size=1, max_size=3),
    st.sampled_from([250, 250, 250, 451, 554]),
    st.sampled_from([b"Subject: x\n\nbody", b".dot\r\n..\r\n.", b"a\rb\nc" * 50]),
)


@pytest.mark.parametrize("chunking", [True, False], ids=["bdat", "data"])
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    messages=st.lists(message_st, min_size=1, max_size=12),
    cuts=st.lists(st.integers(0, 4000), max_size=6),
    depth=st.integers(1, 8),
)
def test_send_many_equals_one_send_after_the_other(
    chunking: bool, messages: list[Msg], cuts: list[int], depth: int
) -> None:
    async def main() -> tuple[list[object], list[object], Splitting]:
        async with splitting_server(cuts, chunking=chunking) as server:
            expected = await one_by_one(server.port, messages, chunking)
            sequential = list(server.messages)
            server.messages.clear()
            async with await SmtpConnection.open(relay(server.port, chunking=chunking)) as c:
                got = [summary(r) for r in await c.send_many(messages, max_messages=depth)]
            assert server.messages == sequential  # the same messages delivered, in order
            return expected, got, server

    expected, got, _ = anyio.run(main, backend="trio")
    assert got == expected


# -- send_many's checks, for the whole batch at once ----------------------------------------

_EXTENSIONS = ("PIPELINING", "SIZE 300", "SIZE", "8BITMIME", "SMTPUTF8", "CHUNKING")
_address = st.one_of(
    st.sampled_from(
        [
            "a@x.test",
            "b@y.test",
            "",
            "x" * 505 + "@y.test",  # 512 characters: the most an address may have
            "x" * 506 + "@y.test",
            "é@x.test",
            "<a@x.test>",
            "a\r\nRCPT TO:<b@y.test>",
            "a\x7f@x.test",
            "a\x00@x.test",
        ]
    ),
    st.text(max_size=12),
)
_content = st.one_of(
    st.sampled_from(
        [b"Subject: x\r\n\r\nbody\r\n", b"a\rb\nc", "é".encode() + b"\r\n", b"x\r\n" * 120]
    ),
    st.binary(max_size=40),
    st.builds(bytearray, st.binary(max_size=8)),
)
_recipients = st.one_of(st.lists(_address, max_size=2), st.tuples(_address), st.text(max_size=1))
_plain_address = st.sampled_from(["a@x.test", "b@y.test", "x" * 505 + "@y.test", "c"])
_plain_message = st.tuples(
    _plain_address | st.just(""), st.lists(_plain_address, min_size=1, max_size=1), _content
)


def _connection(extensions: Sequence[str], chunking: bool) -> SmtpConnection:
    """A connection whose server said EHLO with ``extensions``, as far as preparing a
    message goes (nothing is sent: preparing reads only the EHLO reply)."""
    conn = SmtpConnection(
        RelayConfig(host="mx.test", chunking=chunking),
        None,  # type: ignore[arg-type]
        tls_context=None,
        tls_active=False,
    )
    proto = conn._proto
    proto.receive_data(b"220 mx.test ESMTP\r\n")
    assert isinstance(proto.next_event(), Greeting)
    proto.send(Ehlo("client.test"))
    lines = [b"250-mx.test", *(b"250-%s" % e.encode() for e in extensions), b"250 HELP"]
    proto.receive_data(b"\r\n".join(lines) + b"\r\n")
    assert isinstance(proto.next_event(), Response)
    return conn


def _one_by_one(conn: SmtpConnection, messages: list[Msg]) -> list[object]:
    """What send_many's checks and ``_prepare`` make of each message, one at a time."""
    out: list[object] = []
    for sender, recipients, content in messages:
        try:
            rcpts = tuple(recipients) if not isinstance(recipients, str) else None
            assert rcpts, "a str, or no recipient: send_many raises"
            check_address(sender, allow_empty=True)
            for r in rcpts:
                check_address(r)
        except (LocalProtocolError, AssertionError) as exc:
            out.append(type(exc).__name__)
            continue
        out.append(conn._prepare(sender, rcpts, content))
    return out


@settings(max_examples=1000, deadline=None)
@given(
    extensions=st.lists(st.sampled_from(_EXTENSIONS), unique=True),
    chunking=st.booleans(),
    messages=st.lists(_plain_message, min_size=1, max_size=5),
    odd=st.none()
    | st.tuples(_address, _recipients, _content)
    | st.tuples(_address, st.lists(_plain_address, min_size=1, max_size=1), _content)
    | st.tuples(_plain_address, st.lists(_address, min_size=1, max_size=1), _content)
    | st.tuples(_plain_address, _plain_address, _content),  # a str, not a list
    at=st.integers(0, 5),
)
def test_the_batch_checks_prepare_each_message_as_one_at_a_time_would(
    extensions: list[str], chunking: bool, messages: list[Msg], odd: Msg | None, at: int
) -> None:
    if odd is not None:
        messages.insert(at, odd)
    conn = _connection(extensions, chunking)
    expected = _one_by_one(conn, messages)
    # The plain case: every message passes the checks and _prepare with one ASCII
    # recipient, from an ASCII sender, its content bytes. Only then does the batch path
    # take it; else every message goes one at a time (which says what is wrong).
    plain_case = all(isinstance(e, _Prepared) and len(e.rcpts) == 1 for e in expected) and all(
        type(r) in (list, tuple) and type(c) is bytes and s.isascii() and r[0].isascii()
        for s, r, c in messages
    )
    plain = conn._prepare_plain(messages)
    if not plain_case:
        assert plain is None
        return
    assert plain is not None
    assert [(p.mail, p.rcpts, p.content) for p in plain] == [
        (e.mail, e.rcpts, e.content) for e in expected if isinstance(e, _Prepared)
    ]
    assert [p.line for p in plain] == [conn._proto.mail_line(p.mail) for p in plain]


# -- writes and round trips ---------------------------------------------------------------


@pytest.mark.anyio
async def test_bdat_pipeline_is_one_write_for_many_messages() -> None:
    async with (
        scripted_server() as server,
        await SmtpConnection.open(relay(server.port)) as conn,
    ):
        results = await conn.send_many(
            [("a@x.test", [f"b{i}@y.test"], b"m%d" % i) for i in range(5)]
        )
    assert all(isinstance(r, SendOutcome) and r.accepted(r.recipients[0][0]) for r in results)
    [write] = [chunk for chunk in server.raw if b"MAIL FROM" in chunk]
    # RSET between messages: a failed one must not leave its transaction to the next
    expected = b"RSET\r\n".join(
        b"MAIL FROM:<a@x.test> SIZE=4\r\nRCPT TO:<b%d@y.test>\r\nBDAT 4 LAST\r\nm%d\r\n" % (i, i)
        for i in range(5)
    )
    assert write == expected


@pytest.mark.anyio
async def test_bdat_pipeline_respects_the_byte_budget() -> None:
    async with (
        scripted_server() as server,
        await SmtpConnection.open(relay(server.port)) as conn,
    ):
        big = b"x" * 1000
        results = await conn.send_many(
            [("a@x.test", [f"b{i}@y.test"], big) for i in range(7)], max_bytes=2500
        )
    assert all(isinstance(r, SendOutcome) and r.data and r.data.code == 250 for r in results)
    writes = [chunk for chunk in server.raw if chunk.startswith(b"MAIL FROM")]
    # 3 messages reach the budget
    assert [w.count(b"MAIL FROM") for w in writes] == [3, 3, 1]


@pytest.mark.anyio
async def test_data_pipeline_sends_the_dot_with_the_next_envelope() -> None:
    async with (
        scripted_server(chunking=False) as server,
        await SmtpConnection.open(relay(server.port)) as conn,
    ):
        assert not conn.chunking
        results = await conn.send_many(
            [("a@x.test", [f"b{i}@y.test"], b".m%d" % i) for i in range(3)]
        )
    assert all(isinstance(r, SendOutcome) and r.data and r.data.code == 250 for r in results)
    writes = [c for c in server.raw if c[:4] in (b"MAIL", b"..m0", b"..m1", b"..m2")]
    assert writes == [
        b"MAIL FROM:<a@x.test> SIZE=5\r\nRCPT TO:<b0@y.test>\r\nDATA\r\n",
        b"..m0\r\n.\r\nMAIL FROM:<a@x.test> SIZE=5\r\nRCPT TO:<b1@y.test>\r\nDATA\r\n",
        b"..m1\r\n.\r\nMAIL FROM:<a@x.test> SIZE=5\r\nRCPT TO:<b2@y.test>\r\nDATA\r\n",
        b"..m2\r\n.\r\n",
    ]
    received = [e.content for e in server.log if isinstance(e, MessageReceived)]
    assert received == [b".m0\r\n", b".m1\r\n", b".m2\r\n"]


@pytest.mark.anyio
@pytest.mark.parametrize("chunking", [True, False], ids=["bdat", "data"])
async def test_a_refused_message_resets_only_its_transaction(chunking: bool) -> None:
    rules = [("*@bounce.test", 550, "5.1.1 no such user")]
    sink = Sink(keep=True, rules=rules, chunking=chunking)
    async with anyio.create_task_group() as tg:
        port = await tg.start(sink.serve)
        async with await SmtpConnection.open(relay(port, chunking=chunking)) as conn:
            messages: list[Msg] = [
                ("a@x.test", ["x@bounce.test" if i % 4 == 1 else f"ok{i}@y.test"], b"m%d" % i)
                for i in range(20)
            ]
            results = await conn.send_many(messages)
            assert not conn.broken
            for i, result in enumerate(results):
                assert isinstance(result, SendOutcome)
                status = "bounced" if i % 4 == 1 else "delivered"
                assert result.status(result.recipients[0][0]) == status
            # the connection is clean afterwards
            assert (await conn.send("a@x.test", ["z@y.test"], b"last")).accepted("z@y.test")
        tg.cancel_scope.cancel()
    assert [m[2] for m in sink.received] == [
        normalize_newlines(b"m%d" % i) for i in range(20) if i % 4 != 1
    ] + [b"last\r\n"]


# -- breaks and 421 -----------------------------------------------------------------------


def _drop_at(n: int, answer: object = DROP) -> Script:
    """A script answering ``answer`` to the ``n``-th message's end (0-based)."""
    seen = 0

    def script(proto: ServerProtocol, event: ServerEvent) -> object:
        nonlocal seen
        if isinstance(event, MessageReceived):
            seen += 1
            if seen == n + 1:
                return answer
        return None

    return script


@pytest.mark.anyio
async def test_bdat_break_mid_pipeline() -> None:
    async with (
        scripted_server(_drop_at(2)) as server,
        await SmtpConnection.open(relay(server.port)) as conn,
    ):
        results = await conn.send_many(
            [("a@x.test", [f"b{i}@y.test"], b"m") for i in range(6)], max_messages=4
        )
        assert conn.broken
    assert [type(r) for r in results[:2]] == [SendOutcome, SendOutcome]
    for r in results[2:4]:  # written in full, reply lost: maybe delivered
        assert isinstance(r, SmtpConnectionLost) and r.outcome_unknown
    # The one whose reply the close cut off is in doubt (an attempt); the next was queued
    # behind it, and the server stopped reading when it closed.
    assert [r.behind for r in results[2:4] if isinstance(r, SmtpConnectionLost)] == [False, True]
    assert all(isinstance(r, SmtpUntried) for r in results[4:])  # never written


@pytest.mark.anyio
async def test_data_break_mid_pipeline() -> None:
    async with (
        scripted_server(_drop_at(1), chunking=False) as server,
        await SmtpConnection.open(relay(server.port, chunking=False)) as conn,
    ):
        results = await conn.send_many([("a@x.test", [f"b{i}@y.test"], b"m") for i in range(4)])
    assert isinstance(results[0], SendOutcome) and results[0].accepted("b0@y.test")
    assert isinstance(results[1], SmtpConnectionLost) and results[1].outcome_unknown
    # message 2's envelope went with message 1's dot, but never its content
    assert all(isinstance(r, SmtpUntried) for r in results[2:])


@pytest.mark.anyio
@pytest.mark.parametrize("answer", [DROP, HANG], ids=["drop", "hang"])
async def test_data_break_between_a_final_reply_and_the_next_envelope(answer: object) -> None:
    """The client reads a message's final reply and the next envelope's replies in one
    go when they come together; when only the first comes, that message still has its
    outcome, and the next one (whose content never went) is not in doubt."""

    def script(proto: ServerProtocol, event: ServerEvent) -> object:
        if isinstance(event, MailFrom) and event.address.startswith("c@"):
            return answer
        return None

    async with scripted_server(script, chunking=False) as server:  # type: ignore[arg-type]
        cfg = relay(server.port, chunking=False, mail_timeout=0.3, rcpt_timeout=0.3)
        async with await SmtpConnection.open(cfg) as conn:
            senders = ["a@x.test", "b@x.test", "c@x.test", "d@x.test"]
            results = await conn.send_many([(s, ["r@y.test"], b"m") for s in senders])
            assert conn.broken
    assert [r.status("r@y.test") for r in results[:2] if isinstance(r, SendOutcome)] == [
        "delivered",
        "delivered",
    ]
    lost = results[2]
    assert isinstance(lost, SmtpTimeout if answer is HANG else SmtpConnectionLost)
    assert not lost.outcome_unknown
    assert isinstance(results[3], SmtpUntried)
    assert sum(isinstance(e, MessageReceived) for e in server.log) == 2


@pytest.mark.anyio
@pytest.mark.parametrize("chunking", [True, False], ids=["bdat", "data"])
async def test_421_mid_pipeline_leaves_the_rest_untried(chunking: bool) -> None:
    bye = Reply.of(421, "4.3.2 shutting down")

    def script(proto: ServerProtocol, event: ServerEvent) -> Reply | None:
        if isinstance(event, MailFrom) and event.address.startswith("c@"):
            return bye
        return None

    async with (
        scripted_server(script, chunking=chunking) as server,
        await SmtpConnection.open(relay(server.port, chunking=chunking)) as conn,
    ):
        senders = ["a@x.test", "b@x.test", "c@x.test", "d@x.test", "e@x.test"]
        results = await conn.send_many([(s, ["r@y.test"], b"m") for s in senders])
        assert conn.broken
    assert [type(r) for r in results] == [SendOutcome] * 3 + [SmtpUntried] * 2
    third = results[2]
    assert isinstance(third, SendOutcome) and third.mail.code == 421
    assert third.status("r@y.test") == "deferred"


@pytest.mark.anyio
async def test_timeout_mid_pipeline_is_in_doubt() -> None:
    async with scripted_server(_drop_at(1, HANG)) as server:  # type: ignore[arg-type]
        cfg = relay(server.port, message_end_timeout=0.3, mail_timeout=0.3, rcpt_timeout=0.3)
        async with await SmtpConnection.open(cfg) as conn:
            results = await conn.send_many([("a@x.test", [f"b{i}@y.test"], b"m") for i in range(3)])
    assert isinstance(results[0], SendOutcome)
    # A slow server may still read what is queued: every one of them stays in doubt.
    assert all(isinstance(r, SmtpTimeout) and r.outcome_unknown for r in results[1:])


@pytest.mark.anyio
async def test_local_refusals_do_not_stop_the_others() -> None:
    async with (
        scripted_server() as server,
        await SmtpConnection.open(relay(server.port)) as conn,
    ):
        results = await conn.send_many(
            [
                ("a@x.test", ["b@y.test"], b"ok"),
                ("a@x.test", ["bad<@y.test"], b"bad address"),
                ("a@x.test", ["c\u00e9@y.test"], b"utf8"),  # SMTPUTF8 offered
                ("a@x.test", ["d@y.test"], b"ok"),
            ]
        )
    assert isinstance(results[0], SendOutcome) and results[0].accepted("b@y.test")
    assert isinstance(results[1], SmtpError)
    assert isinstance(results[2], SendOutcome) and results[2].accepted("c\u00e9@y.test")
    assert isinstance(results[3], SendOutcome) and results[3].accepted("d@y.test")


@pytest.mark.anyio
async def test_without_pipelining_one_after_the_other() -> None:
    async with (
        scripted_server(pipelining=False) as server,
        await SmtpConnection.open(relay(server.port)) as conn,
    ):
        assert not conn.pipelining
        results = await conn.send_many([("a@x.test", [f"b{i}@y.test"], b"m") for i in range(3)])
    assert all(isinstance(r, SendOutcome) and r.data and r.data.code == 250 for r in results)
    assert sum(isinstance(e, MessageReceived) for e in server.log) == 3
    assert not any(isinstance(e, DataStart) for e in server.log)


# -- a retrying pipelined sender against the fault-injecting sink --------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("chunking", [True, False], ids=["bdat", "data"])
async def test_a_retrying_pipelined_sender_gets_every_message_through(chunking: bool) -> None:
    """Drops after a stored message, 421 at connect, deferrals and bounces, with batches
    of 8: each recipient ends as the plan says; a message is received again only after an
    outcome the client reported as unknown; untried messages cost no attempt."""
    plan = FaultPlan(seed=5, rcpt_defer=0.2, rcpt_bounce=0.1, disconnect=0.05, connect_421=0.1)
    rcpts = [f"user{i}@example.com" for i in range(300)]
    queue: deque[str] = deque(rcpts)
    results: dict[str, str] = {}
    unknown: Counter[str] = Counter()
    untried = 0
    async with fault_sink(plan, keep=True) as sink:
        config = relay(sink.port, chunking=chunking)

        async def worker() -> None:
            nonlocal untried
            conn: SmtpConnection | None = None
            while len(results) < len(rcpts):
                batch = [queue.popleft() for _ in range(min(8, len(queue)))]
                if not batch:
                    await anyio.sleep(0.01)
                    continue
                while conn is None or not conn.usable:
                    if conn is not None:
                        await conn.aclose()
                    try:
                        conn = await SmtpConnection.open(config)
                    except SmtpError:
                        conn = None
                sent = await conn.send_many(
                    [("from@x.test", [r], b"Subject: hi\r\n\r\nbody\r\n") for r in batch],
                    max_messages=4,  # BDAT: two writes, so a drop in the first leaves some untried
                )
                for r, outcome in zip(batch, sent, strict=True):
                    if isinstance(outcome, SmtpUntried):
                        untried += 1
                        queue.append(r)
                    elif isinstance(outcome, SmtpError):
                        assert isinstance(outcome, SmtpConnectionLost | SmtpTimeout)
                        unknown[r] += outcome.outcome_unknown
                        queue.append(r)
                    elif outcome.status(r) == "deferred":
                        queue.append(r)
                    else:
                        results[r] = outcome.status(r)
            if conn is not None:
                await conn.aclose()

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                for _ in range(4):
                    tg.start_soon(worker)
    log = sink.log
    for r in rcpts:
        if plan.kind(r) == "bounce":
            assert results[r] == "bounced" and log.received[r] == 0
        else:
            assert results[r] == "delivered"
            assert 1 <= log.received[r] <= 1 + unknown[r]
    assert log.dropped > 0 and untried > 0
    assert sum(log.received.values()) == log.messages


# -- the two machines against each other: pipelines across messages, any split ------------


def _split(data: bytes, cuts: Sequence[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


def _pump(
    client: ClientProtocol, server: ServerProtocol, wire: bytes, cuts: Sequence[int]
) -> tuple[list[ServerEvent], list[Response]]:
    """``wire`` into the server in pieces, each event answered with the scripted reply;
    the replies back into the client in pieces; the events on both sides."""
    got: list[ServerEvent] = []
    out = bytearray()
    for piece in _split(wire, cuts):
        server.receive_data(piece)
        while (event := server.next_event()) is not NEED_DATA:
            assert not isinstance(event, ConnectionClosed)
            got.append(event)
            out += server.send(scripted_reply(server, event) or server.default_reply(event))
    responses: list[Response] = []
    for piece in _split(bytes(out), cuts[::-1]):
        client.receive_data(piece)
        while (event := client.next_event()) is not NEED_DATA:
            assert isinstance(event, Response)
            responses.append(event)
    return got, responses


@settings(max_examples=150, deadline=None)
@given(
    messages=st.lists(message_st.filter(lambda m: "s421" not in m[0]), min_size=1, max_size=6),
    cuts=st.lists(st.integers(0, 5000), max_size=12),
    chunking=st.booleans(),
)
def test_machines_pipelining_across_messages(
    messages: list[Msg], cuts: list[int], chunking: bool
) -> None:
    """What send_many writes, byte for byte through our server machine: every message
    arrives normalised, with its own envelope, exactly when the script accepts it; the
    client machine pairs each reply with its command."""
    server = ServerProtocol("m.test", chunking=chunking, pipelining=True)
    client = ClientProtocol()
    client.receive_data(server.send(Reply.of(220, "m.test ESMTP")))
    assert isinstance(client.next_event(), Greeting)
    _, [ehlo] = _pump(client, server, client.send(Ehlo("c.test")), cuts)
    assert ehlo.reply.code == 250 and client.pipelining
    wire = bytearray()
    expected: list[tuple[str, tuple[str, ...], bytes]] = []
    received: list[tuple[str, tuple[str, ...], bytes]] = []
    for n, (sender, rcpts, content) in enumerate(messages):
        ok = [r for r in rcpts if _coded(r) == 250]
        final = _FINAL.search(content)
        if _coded(sender) == 250 and ok and final is not None and final[1] == b"250":
            expected.append((sender, tuple(ok), normalize_newlines(content)))
        if n and chunking:
            wire += client.send(Rset())  # as send_many does between BDAT messages
        wire += client.send(Mail(sender))
        for r in rcpts:
            wire += client.send(Rcpt(r))
        if chunking:
            wire += client.send(Bdat(content))
            continue
        wire += client.send(Data())
        got, responses = _pump(client, server, bytes(wire), cuts)
        wire.clear()
        received += [(e.mail_from, e.recipients, e.content) for e in got if _taken(e)]
        data = responses[-1]
        assert isinstance(data.command, Data)
        # 354 or not, the content (or just the dot) rides with the next envelope
        if data.reply.code == 354:
            wire += client.send(Message(content if any(_coded(r) == 250 for r in rcpts) else b""))
        else:
            wire += client.send(Rset())  # the transaction may be open: RSET, then MAIL
    wire += client.send(Rset())
    got, responses = _pump(client, server, bytes(wire), cuts)
    received += [(e.mail_from, e.recipients, e.content) for e in got if _taken(e)]
    assert received == expected
    assert not client.outstanding and client.phase is Phase.READY


def _taken(event: ServerEvent) -> bool:
    if not isinstance(event, MessageReceived):
        return False
    m = _FINAL.search(event.content)
    return m is None or m[1] == b"250"
