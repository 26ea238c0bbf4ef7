"""``mailcore bench smtp``: the operators' tuning tool, against our sink on loopback.

The counts must add up: every message the report calls accepted is one the sink took, a
refusal is counted under its reply code, and a relay off loopback gets nothing without an
explicit ``--to``.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
import pytest
import trio

from mailcore import Settings
from mailcore.benchsmtp import (
    BenchOptions,
    BenchUsageError,
    MessageFactory,
    SettingResult,
    is_loopback,
    parse_connections,
    parse_size,
    recommend,
    redacted,
    run_bench,
)
from mailcore.smtp import Rule, Sink

ROOT = Path(__file__).resolve().parents[2]


# -- pure parts ---------------------------------------------------------------------------


def test_sizes_and_connection_lists_parse() -> None:
    assert parse_size("10k") == 10_240
    assert parse_size("10KB") == 10_240
    assert parse_size("1.5k") == 1_536
    assert parse_size("2m") == 2 * 1_048_576
    assert parse_size("900") == 900
    assert parse_connections("64,1, 8,32,8") == (1, 8, 32, 64)
    for bad in ("", "k", "10q", "-1", "0"):
        with pytest.raises(BenchUsageError):
            parse_size(bad)
    for bad in ("", "0,8", "a,b"):
        with pytest.raises(BenchUsageError):
            parse_connections(bad)


@pytest.mark.parametrize("size", [400, 401, 402, 1_000, 10_240, 65_536, 100_003])
def test_messages_are_exactly_the_size_asked_and_distinct(size: int) -> None:
    make = MessageFactory(size, "a@x.test", "b@y.test")
    first, second = make(), make()
    assert len(first) == len(second) == size
    assert first != second  # a Message-ID of its own
    assert first.endswith(b"\r\n") and b"\n." not in first
    assert all(len(line) <= 998 for line in first.split(b"\r\n"))


def test_a_size_below_the_headers_is_refused() -> None:
    with pytest.raises(BenchUsageError, match="too small"):
        MessageFactory(100, "a@x.test", "b@y.test")


def _setting(n: int, rate: float, failed: int = 0, attempted: int = 1_000) -> SettingResult:
    return SettingResult(
        connections=n,
        attempted=attempted,
        delivered=attempted - failed,
        failed=failed,
        errors_by_code={"451": failed} if failed else {},
        seconds=1.0,
        connect_seconds=0.01,
        reconnects=0,
        messages_per_second=rate,
        cpu_us_per_message=100.0,
        latency_p50_ms=1.0,
        latency_p99_ms=2.0,
    )


def test_recommendation_is_the_smallest_count_within_5_percent_of_the_best() -> None:
    runs = [_setting(1, 900), _setting(8, 4_000), _setting(32, 4_150), _setting(64, 4_100)]
    assert recommend(runs)[0] == 8  # 4,000 ≥ 95 % of 4,150
    runs = [_setting(1, 900), _setting(8, 3_000), _setting(32, 4_150)]
    assert recommend(runs)[0] == 32


def test_recommendation_passes_over_settings_with_more_errors() -> None:
    runs = [_setting(8, 4_000), _setting(32, 4_000), _setting(64, 6_000, failed=50)]
    n, reason = recommend(runs)
    assert n == 8 and "higher error rate: [64]" in reason
    assert recommend([_setting(8, 0, failed=1_000)]) == (
        None,
        "no setting got a message accepted: check the URL, --to and the errors",
    )


def test_credentials_never_reach_the_report() -> None:
    assert redacted("submission://user:s3cret@relay.example:587?tls=required") == (
        "submission://relay.example:587?tls=required"
    )
    assert redacted("smtp://127.0.0.1:2525") == "smtp://127.0.0.1:2525"
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("relay.example.com") and not is_loopback("10.0.0.1")


def test_options_are_checked() -> None:
    with pytest.raises(BenchUsageError, match="not both"):
        BenchOptions(url="smtp://127.0.0.1:25", connections=(1,), size=1000, messages=1, duration=1)
    with pytest.raises(BenchUsageError):
        BenchOptions(url="smtp://127.0.0.1:25", connections=(0,), size=1000)


# -- against the sink, in process ---------------------------------------------------------


async def _bench(
    options: BenchOptions, rules: list[Rule] | None = None
) -> tuple[Sink, list[SettingResult], int | None]:
    sink = Sink(keep=True, rules=rules or [])
    async with anyio.create_task_group() as tg:
        port = await tg.start(sink.serve)
        url = options.url.replace("PORT", str(port))
        opts = BenchOptions(**{**options.__dict__, "url": url})
        with anyio.fail_after(60):
            report = await run_bench(opts)
        tg.cancel_scope.cancel()
    return sink, report.settings, report.recommended


@pytest.mark.anyio
@pytest.mark.parametrize("depth", [1, 16])
async def test_counts_add_up_against_the_sink(depth: int) -> None:
    options = BenchOptions(
        url="smtp://127.0.0.1:PORT",
        connections=(1, 4),
        size=3_000,
        messages=60,
        pipeline_depth=depth,
    )
    sink, settings, recommended = await _bench(options)
    assert [s.connections for s in settings] == [1, 4]
    for s in settings:
        assert s.attempted == s.delivered == 60 and s.failed == 0 and s.errors_by_code == {}
        assert s.messages_per_second > 0 and s.seconds > 0
        assert s.latency_p50_ms is not None and s.latency_p99_ms is not None
        assert 0 < s.latency_p50_ms <= s.latency_p99_ms
        assert s.cpu_us_per_message is not None and s.cpu_us_per_message > 0
    assert sink.messages == sink.recipients == sum(s.delivered for s in settings) == 120
    assert sink.connections == 1 + 4  # one session per connection, reused for every message
    assert {rcpts for _, rcpts, _ in sink.received} == {("sink@mailcore.invalid",)}
    assert {len(content) for _, _, content in sink.received} == {3_000}
    assert recommended in (1, 4)


@pytest.mark.anyio
async def test_pipelining_is_reported_only_when_the_server_offers_it() -> None:
    for offered, expected in ((True, 8), (False, 1)):
        sink = Sink(keep=True, pipelining=offered)
        async with anyio.create_task_group() as tg:
            port = await tg.start(sink.serve)
            options = BenchOptions(
                url=f"smtp://127.0.0.1:{port}",
                connections=(2,),
                size=1_000,
                messages=37,  # not a multiple of the depth: the last batch is short
                pipeline_depth=8,
            )
            with anyio.fail_after(60):
                report = await run_bench(options)
            tg.cancel_scope.cancel()
        (s,) = report.settings
        assert report.pipeline_depth == expected
        assert s.attempted == s.delivered == sink.messages == 37


@pytest.mark.anyio
async def test_refusals_are_counted_by_reply_code() -> None:
    options = BenchOptions(
        url="smtp://127.0.0.1:PORT",
        connections=(2,),
        size=1_000,
        messages=25,
        rcpt_to="someone@busy.test",
    )
    sink, (s,), recommended = await _bench(options, [("*@busy.test", 451, "4.7.1 slow down")])
    assert s.attempted == 25 and s.delivered == 0 and s.failed == 25
    assert s.errors_by_code == {"451": 25}
    assert sink.messages == 0 and sink.rejected == 25
    assert recommended is None


@pytest.mark.anyio
async def test_a_duration_bounds_each_setting() -> None:
    options = BenchOptions(url="smtp://127.0.0.1:PORT", connections=(2,), size=2_000, duration=0.3)
    sink, (s,), _ = await _bench(options)
    assert s.delivered > 0 and s.delivered == s.attempted == sink.messages
    assert 0.25 < s.seconds < 5


@pytest.mark.anyio
async def test_a_dead_relay_is_reported_not_hung() -> None:
    from tests.peers import free_port

    options = BenchOptions(
        url=f"smtp://127.0.0.1:{free_port()}", connections=(2,), size=1_000, messages=4
    )
    with anyio.fail_after(30):
        report = await run_bench(options)
    (s,) = report.settings
    assert s.delivered == 0 and s.attempted == s.failed == 4
    assert sum(s.errors_by_code.values()) == 4
    assert all(key.startswith("connect: ") for key in s.errors_by_code)
    assert report.recommended is None


# -- the command, as an operator runs it --------------------------------------------------


@contextmanager
def sink_in_thread() -> Iterator[tuple[Sink, int]]:
    """Our sink on its own Trio loop in a thread, so the test can read its counters."""
    sink = Sink()
    ready = threading.Event()
    holder: dict[str, object] = {}

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            holder["port"] = await nursery.start(sink.serve)
            holder["token"] = trio.lowlevel.current_trio_token()
            holder["scope"] = nursery.cancel_scope
            ready.set()

    thread = threading.Thread(target=trio.run, args=(main,), daemon=True)
    thread.start()
    assert ready.wait(10)
    try:
        port = holder["port"]
        assert isinstance(port, int)
        yield sink, port
    finally:
        scope, token = holder["scope"], holder["token"]
        assert isinstance(scope, trio.CancelScope) and isinstance(token, trio.lowlevel.TrioToken)
        trio.from_thread.run_sync(scope.cancel, trio_token=token)
        thread.join(10)


def mailcore(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mailcore.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_command_reports_json_and_the_sink_got_every_accepted_message() -> None:
    with sink_in_thread() as (sink, port):
        r = mailcore(
            "bench",
            "smtp",
            "--url",
            f"smtp://127.0.0.1:{port}",
            "--connections",
            "1,3",
            "--size",
            "2k",
            "--messages",
            "30",
            "--json",
        )
        assert r.returncode == 0, r.stderr
        report = json.loads(r.stdout)
        received = sink.messages
    assert set(report) == {
        "relay",
        "tls",
        "tls_active",
        "extensions",
        "size",
        "mail_from",
        "rcpt_to",
        "messages",
        "duration",
        "pipeline_depth",
        "settings",
        "recommended",
        "reason",
    }
    assert report["size"] == 2_048 and report["messages"] == 30
    assert report["pipeline_depth"] == Settings.load(env={}).pipeline_depth  # the sender's
    assert "PIPELINING" in report["extensions"]
    assert [s["connections"] for s in report["settings"]] == [1, 3]
    for s in report["settings"]:
        assert s["attempted"] == s["delivered"] == 30
        assert s["failed"] == 0 and s["errors_by_code"] == {}
        assert s["messages_per_second"] > 0
    assert received == sum(s["delivered"] for s in report["settings"]) == 60
    assert report["recommended"] in (1, 3)


def test_command_prints_a_table_with_the_setting_to_use() -> None:
    with sink_in_thread() as (_sink, port):
        r = mailcore(
            "bench",
            "smtp",
            "--url",
            f"smtp://127.0.0.1:{port}",
            "--connections",
            "2",
            "--messages",
            "10",
        )
    assert r.returncode == 0, r.stderr
    assert "msg/s" in r.stdout and "p99 ms" in r.stdout
    assert "smtp_connections = 2" in r.stdout
    assert "MAILCORE_SMTP_CONNECTIONS=2" in r.stdout


def test_command_needs_to_for_a_relay_off_loopback() -> None:
    r = mailcore("bench", "smtp", "--url", "smtp://relay.example.com:587", "--messages", "1")
    assert r.returncode == 2
    assert "--to" in r.stderr and "nothing was sent" in r.stderr
    r = mailcore("bench", "smtp", "--url", "smtp://127.0.0.1:25", "--messages", "1", "--tls", "x")
    assert r.returncode == 2 and "--tls must be one of" in r.stderr


@pytest.mark.anyio
async def test_a_relay_that_refuses_connections_costs_one_message_per_attempt() -> None:
    """Each failed connection attempt is one failed message, whatever the depth; the run
    still ends when the budget is spent."""
    with socket.socket() as s:  # a loopback port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    options = BenchOptions(
        url=f"smtp://127.0.0.1:{port}",
        connections=(2,),
        size=1_000,
        messages=5,
        pipeline_depth=16,
    )
    with anyio.fail_after(30):
        report = await run_bench(options)
    (s,) = report.settings
    assert s.attempted == s.failed == 5 and s.delivered == 0
    assert sum(s.errors_by_code.values()) == 5
    assert all(key.startswith("connect") for key in s.errors_by_code)
