"""The dev sink: rules, counters, maildir, concurrent clients, and the CLI entry point."""

from __future__ import annotations

import mailbox
import signal
import sys
from pathlib import Path

import anyio
import pytest
from anyio.streams.text import TextReceiveStream

from mailcore.smtp import RelayConfig, Sink, SmtpConnection, parse_reject_rule

pytestmark = pytest.mark.anyio


def relay(port: int) -> RelayConfig:
    return RelayConfig(host="127.0.0.1", port=port, tls="none")


def test_parse_reject_rule() -> None:
    assert parse_reject_rule("*@bounce.test=550") == (
        "*@bounce.test",
        550,
        "5.1.1 Rejected by sink rule",
    )
    assert parse_reject_rule("*@busy.test=451 4.7.1 try later") == (
        "*@busy.test",
        451,
        "4.7.1 try later",
    )
    assert parse_reject_rule("a=b@x.test=554:5.7.1 spam") == ("a=b@x.test", 554, "5.7.1 spam")
    for bad in ("*@x.test", "=550", "*@x.test=999", "*@x.test=354", "*@x.test=55"):
        with pytest.raises(ValueError):
            parse_reject_rule(bad)


async def test_maildir_counters_and_concurrent_clients(tmp_path: Path) -> None:
    sink = Sink(maildir=tmp_path / "mail", rules=[("*@BOUNCE.test", 550, "5.1.1 no")])
    async with anyio.create_task_group() as tg:
        port = await tg.start(sink.serve)

        async def client(n: int) -> None:
            async with await SmtpConnection.open(relay(port)) as conn:
                for i in range(10):
                    body = f"Subject: {n}-{i}\r\n\r\nbody\r\n".encode()
                    outcome = await conn.send("a@x.test", [f"c{n}@y.test", "x@bounce.TEST"], body)
                    assert outcome.statuses == {
                        f"c{n}@y.test": "delivered",
                        "x@bounce.TEST": "bounced",
                    }

        async with anyio.create_task_group() as clients:
            for n in range(4):
                clients.start_soon(client, n)
        tg.cancel_scope.cancel()
    assert (sink.messages, sink.recipients, sink.rejected, sink.connections) == (40, 40, 40, 4)
    assert sink.received == []  # keep=False
    assert "40 messages" in sink.summary()
    box = mailbox.Maildir(tmp_path / "mail", create=False)
    messages = list(box)
    assert len(messages) == 40
    assert not list((tmp_path / "mail" / "tmp").iterdir())
    subjects = sorted(str(m["Subject"]) for m in messages)
    assert subjects == sorted(f"{n}-{i}" for n in range(4) for i in range(10))
    assert all(m["Return-Path"] == "<a@x.test>" for m in messages)


async def test_bad_client_does_not_stop_the_sink() -> None:
    sink = Sink(keep=True)
    async with anyio.create_task_group() as tg:
        port = await tg.start(sink.serve)
        async with await anyio.connect_tcp("127.0.0.1", port) as raw:
            assert (await raw.receive()).startswith(b"220 ")
            await raw.send(b"X" * 5000)  # no line end: a protocol error, connection dropped
            with anyio.fail_after(5), pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
                while True:
                    await raw.receive()
        async with await SmtpConnection.open(relay(port)) as conn:
            assert (await conn.send("a@x.test", ["b@y.test"], b"hi")).accepted("b@y.test")
        tg.cancel_scope.cancel()
    assert sink.received == [("a@x.test", ("b@y.test",), b"hi\r\n")]


async def test_sink_command_runs_until_interrupted(tmp_path: Path) -> None:
    code = (
        "from pathlib import Path; from mailcore.smtp.sink import sink_command; "
        f"sink_command(0, '127.0.0.1', Path({str(tmp_path / 'md')!r}), ['*@bounce.test=550'])"
    )
    async with await anyio.open_process([sys.executable, "-c", code]) as process:
        assert process.stdout is not None
        lines = TextReceiveStream(process.stdout)
        buffer = ""
        with anyio.fail_after(20):
            while "listening on" not in buffer:
                buffer += await lines.receive()
            port = int(buffer.split("listening on 127.0.0.1:")[1].split()[0])
            async with await SmtpConnection.open(relay(port)) as conn:
                outcome = await conn.send("a@x.test", ["b@y.test", "c@bounce.test"], b"hi")
                assert outcome.statuses == {"b@y.test": "delivered", "c@bounce.test": "bounced"}
            while "1 messages" not in buffer:
                buffer += await lines.receive()
            process.send_signal(signal.SIGINT)
            assert await process.wait() == 0
    assert len(list((tmp_path / "md" / "new").iterdir())) == 1
