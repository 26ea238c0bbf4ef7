"""The fault-injecting sink: the plan's decisions, the log, and a small retrying sender
whose every outcome the plan predicts; the CLI form."""

from __future__ import annotations

import json
import signal
import sys
import time
from collections import Counter
from pathlib import Path

import anyio
import pytest
from anyio.streams.text import TextReceiveStream

from mailcore.smtp import (
    FaultPlan,
    FaultSink,
    RelayConfig,
    Reply,
    SmtpConnection,
    SmtpConnectionLost,
    SmtpReplyError,
    SmtpTimeout,
    fault_sink,
)
from mailcore.smtp.faults import transaction_json

pytestmark = pytest.mark.anyio


def relay(port: int, **kwargs: object) -> RelayConfig:
    options: dict[str, object] = {"host": "127.0.0.1", "port": port, "tls": "none"}
    options.update(kwargs)
    return RelayConfig(**options)  # type: ignore[arg-type]


# -- the plan ------------------------------------------------------------------------------


def test_plan_decisions_are_seeded_and_near_their_rates() -> None:
    plan = FaultPlan(seed=7, rcpt_defer=0.1, rcpt_bounce=0.05, disconnect=0.02, connect_421=0.01)
    rcpts = [f"user{i}@example.com" for i in range(20_000)]
    kinds = Counter(plan.kind(r) for r in rcpts)
    assert 0.09 < kinds["defer"] / len(rcpts) < 0.11
    assert 0.04 < kinds["bounce"] / len(rcpts) < 0.06
    drops = sum(plan.disconnects(r, 1) for r in rcpts)
    assert 0.015 < drops / len(rcpts) < 0.025
    refused = sum(plan.refuses_connection(c) for c in range(1, 20_001))
    assert 0.007 < refused / 20_000 < 0.013
    # the same seed decides the same; another seed decides otherwise; case does not matter
    again = FaultPlan(seed=7, rcpt_defer=0.1, rcpt_bounce=0.05)
    assert [again.kind(r) for r in rcpts[:500]] == [plan.kind(r) for r in rcpts[:500]]
    assert plan.kind("USER1@Example.COM") == plan.kind("user1@example.com")
    other = FaultPlan(seed=8, rcpt_defer=0.1, rcpt_bounce=0.05)
    assert [other.kind(r) for r in rcpts[:500]] != [plan.kind(r) for r in rcpts[:500]]


def test_deferred_on_the_first_attempts_only_bounced_on_every_one() -> None:
    plan = FaultPlan(seed=1, rcpt_defer=0.5, rcpt_bounce=0.2, defer_attempts=2)
    rcpts = [f"r{i}@x.test" for i in range(200)]
    deferred = [r for r in rcpts if plan.kind(r) == "defer"]
    bounced = [r for r in rcpts if plan.kind(r) == "bounce"]
    assert deferred and bounced
    for r in deferred:
        assert [plan.outcome(r, a) in ("defer",) for a in (1, 2)] == [True, True]
        assert plan.outcome(r, 3) in ("accept", "disconnect")
        assert plan.rcpt_reply(r, 1) == Reply.of(451, "4.7.1 Try again later (injected fault)")
    for r in bounced:
        assert {plan.outcome(r, a) for a in range(1, 6)} == {"bounce"}
        reply = plan.rcpt_reply(r, 9)
        assert reply is not None and reply.enhanced == (5, 1, 1)


def test_slow_replies() -> None:
    plan = FaultPlan(seed=3, slow=0.25, slow_delay=(0.01, 0.02))
    delays = [plan.reply_delay(c, i) for c in range(1, 41) for i in range(50)]
    slow = [d for d in delays if d]
    assert 0.2 < len(slow) / len(delays) < 0.3
    assert all(0.01 <= d <= 0.02 for d in slow)
    assert FaultPlan(seed=3).reply_delay(1, 0) == 0.0


def test_plan_spec_parsing() -> None:
    spec = (
        "seed=7, rcpt4xx=0.1,rcpt4xx-attempts=2,rcpt5xx=0.05,disconnect=0.02,"
        "connect421=0.01,slow=0.05,slow-delay=0.01-0.2"
    )
    plan = FaultPlan.parse(spec)
    assert plan == FaultPlan(
        seed=7,
        rcpt_defer=0.1,
        defer_attempts=2,
        rcpt_bounce=0.05,
        disconnect=0.02,
        connect_421=0.01,
        slow=0.05,
        slow_delay=(0.01, 0.2),
    )
    assert FaultPlan.parse(plan.describe()) == plan
    assert FaultPlan.parse("") == FaultPlan()
    assert FaultPlan.parse("slow=1,slow-delay=0.3").slow_delay == (0.3, 0.3)
    for bad in ("rcpt4xx", "nope=1", "rcpt5xx=x", "rcpt5xx=1.5", "rcpt4xx=0.6,rcpt5xx=0.6"):
        with pytest.raises(ValueError):
            FaultPlan.parse(bad)
    with pytest.raises(ValueError):
        FaultPlan(defer_reply=Reply.of(550, "5.0.0 not transient"))
    with pytest.raises(ValueError):
        FaultPlan(slow_delay=(0.2, 0.1))


# -- a retrying sender against the sink, every outcome predicted ------------------------------


@pytest.mark.parametrize("chunking", [True, False])
async def test_a_retrying_sender_sees_exactly_what_the_plan_says(chunking: bool) -> None:
    plan = FaultPlan(seed=11, rcpt_defer=0.2, rcpt_bounce=0.1, disconnect=0.1, connect_421=0.1)
    rcpts = [f"user{i}@example.com" for i in range(300)]
    workers = 4
    attempts: Counter[str] = Counter()
    results: dict[str, str] = {}
    unknown: Counter[str] = Counter()
    refused_at_connect = 0
    async with fault_sink(plan, keep=True) as sink:
        config = relay(sink.port, chunking=chunking)
        send, receive = anyio.create_memory_object_stream[str](len(rcpts) * 4)
        for r in rcpts:
            send.send_nowait(r)
        pending = len(rcpts)

        async def attempt(conn: SmtpConnection, r: str) -> None:
            nonlocal pending
            attempts[r] += 1
            try:
                outcome = await conn.send("from@x.test", [r], b"Subject: hi\r\n\r\nbody\r\n")
            except SmtpConnectionLost as exc:
                assert exc.outcome_unknown  # the sink dropped it after the message
                unknown[r] += 1
                send.send_nowait(r)  # retry, as MTAs do: a duplicate at worst
                return
            status = outcome.status(r)
            if status == "deferred":
                send.send_nowait(r)
            else:
                results[r] = status
                pending -= 1

        async def worker() -> None:
            nonlocal refused_at_connect
            conn: SmtpConnection | None = None
            while pending:
                r = None
                with anyio.move_on_after(0.05):
                    r = await receive.receive()
                if r is None:
                    continue
                while conn is None or conn.broken:
                    if conn is not None:
                        await conn.aclose()
                    try:
                        conn = await SmtpConnection.open(config)
                    except SmtpReplyError as exc:
                        assert exc.reply.code == 421 and exc.phase == "greeting"
                        refused_at_connect += 1
                        conn = None
                await attempt(conn, r)
            if conn is not None:
                await conn.aclose()

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                for _ in range(workers):
                    tg.start_soon(worker)
    log = sink.log

    for r in rcpts:
        kind = plan.kind(r)
        outcomes = [plan.outcome(r, a) for a in range(1, attempts[r] + 1)]
        # the client's attempts are the sink's attempts; each went as the plan said
        assert log.attempts[r] == attempts[r]
        if kind == "bounce":
            assert outcomes == ["bounce"] and results[r] == "bounced"
            assert log.received[r] == 0
        else:
            assert results[r] == "delivered"
            assert outcomes[-1] == "accept"
            assert all(o in ("defer", "disconnect") for o in outcomes[:-1])
            assert outcomes.count("defer") == (1 if kind == "defer" else 0)
            assert unknown[r] == outcomes.count("disconnect")
            # a message stored, then the reply lost: received once more per drop
            assert log.received[r] == 1 + unknown[r]
    assert log.dropped == sum(unknown.values()) > 0
    assert log.refused_connections == refused_at_connect > 0
    assert 1 <= log.max_concurrent <= workers
    assert log.max_concurrent_per_client == {"127.0.0.1": log.max_concurrent}
    assert log.concurrent == 0
    assert sum(log.received.values()) == log.messages == len(sink.received)
    assert sink.messages == log.messages
    # every transaction is in the log, with what it was answered
    stored = [t for t in log.transactions if t.stored]
    assert all(t.reply is not None and t.reply.code == 250 for t in stored if not t.dropped)
    assert all(t.reply is None for t in stored if t.dropped)
    assert all(t.chunked is chunking for t in stored)
    refused = [t for t in log.transactions if not t.stored]
    assert all(not t.accepted for t in refused)
    assert all(t.reply is not None and t.reply.code == 554 for t in refused)  # DATA/BDAT
    connections = {c.id for c in log.connections}
    assert connections == set(range(1, len(log.connections) + 1))
    assert sum(c.transactions for c in log.connections) == len(log.transactions)
    assert sum(c.refused for c in log.connections) == refused_at_connect
    json.dumps([transaction_json(t) for t in log.transactions])  # serialisable


async def test_concurrency_is_counted_overall_and_per_client_ip() -> None:
    async with fault_sink() as sink:
        streams = []
        for local in ["127.0.0.1"] * 3 + ["127.0.0.2"] * 2:
            stream = await anyio.connect_tcp("127.0.0.1", sink.port, local_host=local)
            assert (await stream.receive()).startswith(b"220 ")
            streams.append(stream)
        assert sink.log.concurrent == 5
        for stream in streams[:2]:
            await stream.aclose()
        stream = await anyio.connect_tcp("127.0.0.1", sink.port, local_host="127.0.0.3")
        assert (await stream.receive()).startswith(b"220 ")
        streams.append(stream)
        for stream in streams[2:]:
            await stream.aclose()
        with anyio.fail_after(5):
            await sink.wait_idle()
    assert sink.log.max_concurrent == 5
    assert sink.log.max_concurrent_per_client == {"127.0.0.1": 3, "127.0.0.2": 2, "127.0.0.3": 1}
    assert len(sink.log.connections) == 6


async def test_slow_replies_delay_the_session_and_can_time_it_out() -> None:
    plan = FaultPlan(seed=5, slow=1.0, slow_delay=(0.05, 0.05))
    async with fault_sink(plan) as sink:
        start = time.monotonic()
        async with await SmtpConnection.open(relay(sink.port)) as conn:
            assert (await conn.send("a@x.test", ["b@y.test"], b"x")).accepted("b@y.test")
        # greeting, EHLO, MAIL, RCPT, BDAT, QUIT: six replies, 50 ms each
        assert time.monotonic() - start >= 0.3
        with pytest.raises(SmtpTimeout) as info:
            await SmtpConnection.open(relay(sink.port, greeting_timeout=0.02))
        assert info.value.phase == "greeting"


async def test_transactions_ended_without_a_message_are_logged() -> None:
    async with fault_sink() as sink:
        async with await SmtpConnection.open(relay(sink.port)) as conn:
            await conn.reset()
            assert (await conn.send("a@x.test", ["b@y.test"], b"one")).accepted("b@y.test")
        stream = await anyio.connect_tcp("127.0.0.1", sink.port)
        await stream.receive()
        await stream.send(b"EHLO c.test\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<c@y.test>\r\n")
        replies = b""
        with anyio.fail_after(5):
            while b"2.1.5" not in replies:  # the RCPT was answered
                replies += await stream.receive()
        await stream.aclose()  # leaves in the middle of the transaction
        with anyio.fail_after(5):
            await sink.wait_idle()
    first, second = sink.log.transactions
    assert first.stored and first.accepted == ("b@y.test",) and first.chunked
    assert not second.stored and second.reply is None and second.accepted == ("c@y.test",)
    assert second.started <= second.ended
    assert sink.log.received == Counter({"b@y.test": 1})


# -- the command line --------------------------------------------------------------------------


async def test_cli_fault_sink_writes_a_json_lines_log(tmp_path: Path) -> None:
    log = tmp_path / "sink.jsonl"
    plan = "seed=3,rcpt5xx=0.3"
    argv = [sys.executable, "-m", "mailcore.cli", "sink", "--port", "0", "--faults", plan]
    argv += ["--log", str(log), "--no-chunking"]
    rcpts = [f"u{i}@example.com" for i in range(20)]
    async with await anyio.open_process(argv) as process:
        assert process.stdout is not None
        lines = TextReceiveStream(process.stdout)
        buffer = ""
        with anyio.fail_after(30):
            while "offering:" not in buffer or not buffer.endswith("\n"):
                buffer += await lines.receive()
            assert "faults: seed=3,rcpt5xx=0.3" in buffer
            assert "offering: PIPELINING\n" in buffer  # no CHUNKING
            port = int(buffer.split("listening on 127.0.0.1:")[1].split()[0])
            async with await SmtpConnection.open(relay(port)) as conn:
                assert not conn.chunking
                statuses = [(await conn.send("a@x.test", [r], b"hi")).status(r) for r in rcpts]
            process.send_signal(signal.SIGINT)
            assert await process.wait() == 0
    expected = FaultPlan.parse(plan)
    assert statuses == ["bounced" if expected.kind(r) == "bounce" else "delivered" for r in rcpts]
    records = [json.loads(line) for line in log.read_text().splitlines()]
    kinds = Counter(r["type"] for r in records)
    assert kinds == {"transaction": 20, "connection": 1, "summary": 1}
    summary = records[-1]
    delivered = statuses.count("delivered")
    assert summary["messages"] == delivered and summary["max_concurrent"] == 1
    assert sum(summary["received"].values()) == delivered
    assert summary["attempts"] == dict.fromkeys(rcpts, 1)
    txn = records[0]
    assert txn["connection"] == 1 and txn["client"] == "127.0.0.1"
    assert txn["recipients"][0]["address"] == rcpts[0]
    assert txn["recipients"][0]["attempt"] == 1
    assert txn["chunked"] is False


def test_fault_sink_is_a_sink() -> None:
    sink = FaultSink(FaultPlan(seed=1), keep=True, chunking=False)
    assert sink.keep and not sink.chunking and sink.plan.seed == 1
