"""The engine's DATA pipeline (``_engine.SmtpPipelineRunner``, run by
:meth:`SmtpConnection.send_many` on plain TCP on Trio) against the Python pipeline it
stands in for: for any server behaviour, the same bytes reach the server, every message
gets the same result, and the connection is left in the same state. The engine hands
back to Python at anything but plain replies (multi-line, 421, garbage, EOF, a reset, a
reply slower than its patience, a write the server does not take), mid-group."""

from __future__ import annotations

import os
import signal
import socket
import struct
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailcore.smtp import (
    NEED_DATA,
    ConnectionClosed,
    DataStart,
    QuitRequested,
    RelayConfig,
    Reply,
    SendOutcome,
    ServerEvent,
    ServerProtocol,
    SmtpConnection,
    SmtpError,
    _plain,
)

if TYPE_CHECKING:
    from mailcore._engine import SmtpPipelineResult

# What the server does at its n-th reply: None (its default reply), a code (a plain
# reply), or one of these.
MULTI, BYE, GARBAGE, SLOW, DROP, RESET, STALL = (
    "multi",
    "421",
    "garbage",
    "slow",
    "drop",
    "reset",
    "stall",
)
Action = int | str | None
# Every phase's time limit: the engine's patience is then its most, 0.1 s, so that a
# busy machine (a CI run) does not turn a plain reply into a slow one.
TIMEOUT = 10.0
SLOW_SECONDS = 0.25  # well over that patience


@dataclass
class Server:
    port: int
    received: bytearray = field(default_factory=bytearray)


def _reply(event: ServerEvent, proto: ServerProtocol, action: Action) -> bytes:
    if isinstance(action, int):
        code = action
        if isinstance(event, DataStart) and 200 <= code < 300:
            code = 354
        return proto.send(Reply.of(code, f"{code // 100}.0.0 scripted"))
    if action == MULTI:
        default = proto.default_reply(event)
        return proto.send(Reply(default.code, ("first line", *default.lines)))
    if action == BYE:
        return proto.send(Reply.of(421, "4.3.2 closing"))
    if action == GARBAGE:  # in place of the reply (the machine counts it as sent)
        proto.send(proto.default_reply(event))
        return b"this is not SMTP\r\n"
    return proto.send(proto.default_reply(event))


@asynccontextmanager
async def script_server(
    actions: list[Action], cuts: list[int], *, stall_seconds: float = 0.4
) -> AsyncIterator[Server]:
    """One connection at a time, each served by the same script: ``actions`` by reply
    number (after the greeting and EHLO), every write cut at ``cuts``."""
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    listener.listen()
    server = Server(port=listener.getsockname()[1])

    async def write(sock: trio.socket.SocketType, out: bytearray) -> None:
        start = 0
        for cut in sorted({c % (len(out) + 1) for c in cuts}):
            if start < cut:
                await _send_all(sock, bytes(out[start:cut]))
                await trio.sleep(0.001)
                start = cut
        if start < len(out):
            await _send_all(sock, bytes(out[start:]))
        out.clear()

    async def session(sock: trio.socket.SocketType) -> None:
        proto = ServerProtocol("script.test", chunking=False, pipelining=True)
        out = bytearray(proto.send(Reply.of(220, "script.test ESMTP")))
        replies = 0
        with sock:
            try:
                while True:
                    event = proto.next_event()
                    if event is NEED_DATA:
                        await write(sock, out)
                        data = await sock.recv(65536)
                        server.received += data
                        proto.receive_data(data)
                        continue
                    if isinstance(event, ConnectionClosed):
                        await write(sock, out)
                        return
                    action: Action = None
                    if isinstance(event, QuitRequested):
                        pass
                    elif replies >= 1:  # not EHLO
                        index = replies - 1
                        action = actions[index] if index < len(actions) else None
                    replies += 1
                    if action == SLOW:
                        await write(sock, out)
                        await trio.sleep(SLOW_SECONDS)
                    elif action == STALL:  # answer, then stop reading for a while
                        out += _reply(event, proto, None)
                        await write(sock, out)
                        await trio.sleep(stall_seconds)
                        continue
                    elif action == DROP:
                        await write(sock, out)
                        return
                    elif action == RESET:
                        await write(sock, out)
                        sock.setsockopt(
                            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                        )
                        return
                    out += _reply(event, proto, action)
                    if isinstance(event, QuitRequested) or action == BYE:
                        await write(sock, out)
                        return
            except (OSError, trio.BrokenResourceError):
                pass

    async def serve(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            sock, _ = await listener.accept()
            await session(sock)  # one at a time: the two clients never interleave

    with listener:
        async with trio.open_nursery() as nursery:
            await nursery.start(serve)
            yield server
            nursery.cancel_scope.cancel()


async def _send_all(sock: trio.socket.SocketType, data: bytes) -> None:
    view = memoryview(data)
    while view:
        sent = await sock.send(view)
        view = view[sent:]


def relay(port: int) -> RelayConfig:
    return RelayConfig(
        host="127.0.0.1",
        port=port,
        tls="none",
        chunking=False,
        mail_timeout=TIMEOUT,
        rcpt_timeout=TIMEOUT,
        data_timeout=TIMEOUT,
        message_timeout=TIMEOUT,
        message_end_timeout=TIMEOUT,
    )


def result(r: SendOutcome | SmtpError) -> object:
    """Everything of a result: every reply whole, or the error's kind, text and verdict."""
    if isinstance(r, SendOutcome):
        return ("sent", r.mail, r.recipients, r.data)
    return ("error", type(r).__name__, str(r), getattr(r, "outcome_unknown", None))


Msg = tuple[str, list[str], bytes]


async def run(
    messages: list[Msg], actions: list[Action], cuts: list[int], *, engine: bool
) -> tuple[list[object], bytes, object, dict[str, int]]:
    """send_many of ``messages`` through the engine or in Python: the results, what the
    server received, the connection's state after, and how the engine's runs stopped."""
    stops: dict[str, int] = {}
    original = _plain.PlainTrioStream.run_pipeline

    async def counted(self: _plain.PlainTrioStream, *args: object) -> SmtpPipelineResult:
        got = await original(self, *args)  # type: ignore[arg-type]
        stops[got[5]] = stops.get(got[5], 0) + 1
        return got

    async with script_server(actions, cuts) as server:
        conn = await SmtpConnection.open(relay(server.port))
        conn.engine_pipeline = engine
        _plain.PlainTrioStream.run_pipeline = counted  # type: ignore[method-assign, assignment]
        try:
            results = [result(r) for r in await conn.send_many(messages, max_messages=16)]
            proto = conn._proto
            state: object = (conn.usable, proto.phase, proto.outstanding, conn._rset_pending)
            if conn.usable:  # it goes on as the other would
                try:
                    after: object = result(await conn.send("a@x.test", ["b@y.test"], b"more\n"))
                except SmtpError as exc:
                    after = result(exc)
                state = (state, after)
        finally:
            _plain.PlainTrioStream.run_pipeline = original  # type: ignore[method-assign]
            await conn.aclose()
        received = bytes(server.received)
    return results, received, state, stops


message_st = st.tuples(
    st.sampled_from(["s@x.test", "t@x.test"]),
    st.lists(st.sampled_from(["r@y.test", "q@y.test", "p@z.test"]), min_size=1, max_size=3),
    st.sampled_from([b"Subject: a\n\nshort", b".dot\r\n..\r\n.", b"x" * 70_000 + b"\n"]),
)
action_st: st.SearchStrategy[Action] = st.one_of(
    st.none(),
    st.none(),
    st.none(),
    st.sampled_from([250, 451, 550, 554]),
    st.sampled_from([MULTI, BYE, GARBAGE, SLOW, DROP]),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    messages=st.lists(message_st, min_size=1, max_size=10),
    actions=st.lists(action_st, max_size=40),
    cuts=st.lists(st.integers(0, 200), max_size=3),
)
def test_the_engine_pipeline_does_what_the_python_pipeline_does(
    messages: list[Msg], actions: list[Action], cuts: list[int]
) -> None:
    async def main() -> None:
        engine = await run(messages, actions, cuts, engine=True)
        python = await run(messages, actions, cuts, engine=False)
        assert engine[:3] == python[:3]
        assert engine[3], "the engine ran"
        assert not python[3]

    trio.run(main)


@pytest.mark.parametrize(
    ("action", "stop"),
    [
        (None, "done"),
        (550, "done"),
        (MULTI, "irregular"),
        (BYE, "irregular"),
        (GARBAGE, "irregular"),
        (SLOW, "slow"),
        (DROP, "eof"),
        (RESET, "read-error"),
        (STALL, "slow"),
    ],
)
def test_each_way_the_engine_stops_hands_back_what_python_would_do(
    action: Action, stop: str
) -> None:
    """At the 6th reply (the second message's RCPT, after the first's final reply; the
    second message's content is 9 MB)."""
    line = b"y" * 76 + b"\n"
    messages: list[Msg] = [
        ("s@x.test", ["r@y.test"], line * (120_000 if i == 1 else 10)) for i in range(4)
    ]
    actions: list[Action] = [None] * 5 + [action]

    async def main() -> None:
        engine = await run(messages, actions, [], engine=True)
        python = await run(messages, actions, [], engine=False)
        assert engine[:3] == python[:3]
        assert stop in engine[3], engine[3]
        first = engine[0][0]
        assert isinstance(first, tuple) and first[0] == "sent" and first[3].code == 250

    trio.run(main)


@pytest.mark.parametrize("refused_at", [4, 5, 6])
def test_a_last_message_refused_leaves_its_rset_to_the_next_transaction(refused_at: int) -> None:
    """The second message's MAIL, RCPT or DATA refused: its transaction may still be open
    on the server, and the next one (sent in Python) begins with RSET either way."""
    messages: list[Msg] = [("s@x.test", ["r@y.test"], b"hello\n")] * 2
    actions: list[Action] = [*([None] * refused_at), 550]

    async def main() -> None:
        engine = await run(messages, actions, [], engine=True)
        python = await run(messages, actions, [], engine=False)
        assert engine[:3] == python[:3]
        assert engine[3] == {"done": 1}
        assert engine[1].count(b"RSET\r\n") == 1

    trio.run(main)


def test_a_content_the_server_does_not_take_in_time_is_finished_by_python() -> None:
    """An 8 MB content against a server that stops reading for 0.4 s: the engine's write
    gives up after its patience, and the client writes the rest, byte for byte."""
    content = (b"z" * 998 + b"\r\n") * 8_000
    messages: list[Msg] = [("s@x.test", ["r@y.test"], content)] * 2
    actions: list[Action] = [None, None, STALL]

    async def main() -> None:
        engine = await run(messages, actions, [], engine=True)
        python = await run(messages, actions, [], engine=False)
        assert engine[:3] == python[:3]
        assert [r[0] for r in engine[0]] == ["sent", "sent"]  # type: ignore[index]
        assert engine[2][0][0] is True  # type: ignore[index]  # usable
        assert "slow" in engine[3], engine[3]

    trio.run(main)


def _engine_threads() -> int:
    """Threads of this process named as the engine's driver thread."""
    tasks = Path("/proc/self/task")
    return sum((t / "comm").read_text().strip() == "mailcore smtp" for t in tasks.iterdir())


async def _send_on_connections(count: int, per_connection: int) -> list[list[object]]:
    """``count`` connections, each to its own scripted server, sending at once through the
    engine: each connection's results."""
    message: Msg = ("s@x.test", ["r@y.test"], b"Subject: a\n\nhello\n")
    results: list[list[object]] = [[] for _ in range(count)]
    async with AsyncExitStack() as stack:
        servers = [await stack.enter_async_context(script_server([], [])) for _ in range(count)]

        async def send(k: int) -> None:
            conn = await SmtpConnection.open(relay(servers[k].port))
            try:
                sent = await conn.send_many([message] * per_connection, max_messages=16)
                results[k] = [result(r)[0] for r in sent]
            finally:
                await conn.aclose()

        async with trio.open_nursery() as nursery:
            for k in range(count):
                nursery.start_soon(send, k)
        for server in servers:
            assert bytes(server.received).count(b"\r\n.\r\n") == per_connection
    return results


def test_connections_sending_at_once_share_one_engine_thread() -> None:
    """Eight connections' pipelines run at once on the engine's one driver thread (not a
    thread each), and every message of each is sent."""
    results = trio.run(_send_on_connections, 8, 40)
    assert results == [["sent"] * 40] * 8
    assert _engine_threads() == 1


def test_a_forked_child_gets_its_own_engine_thread() -> None:
    """The child of a fork (``multiprocessing``'s default on Linux, a preforking server)
    has none of its parent's threads: its first pipeline starts a driver of its own."""
    assert trio.run(_send_on_connections, 1, 5) == [["sent"] * 5]  # the parent's driver runs
    pid = os.fork()
    if pid == 0:  # the child: its exit status is the test's verdict
        code = 1
        try:
            signal.alarm(20)  # (a hung child dies of SIGALRM: the test fails, not hangs)
            ok = trio.run(_send_on_connections, 2, 20) == [["sent"] * 20] * 2
            code = 0 if ok and _engine_threads() == 1 else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
