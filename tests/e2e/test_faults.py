"""A 100,000-message send against a fault-injecting sink (its own process): 10 % of
recipients deferred once with 4xx, 5 % bounced with 5xx, 2 % of messages stored but their
reply lost (the connection drops after the final chunk), 1 % of connections refused with
421 at the greeting, some slow replies. From the sink's log and the database:

- every 5xx recipient is bounced and was tried exactly once (never retried);
- every 4xx recipient was retried no earlier than its backoff, and then delivered;
- a recipient gets two messages only if its reply was lost after the message (a
  duplicate no sender can avoid), never otherwise;
- connections never exceed the configured limit;
- the counts add up, and the wallet is charged exactly delivered × price.

The sink's decisions are a keyed hash of (seed, recipient, attempt), so each recipient's
fate is computed from the plan, not sampled. MAILCORE_TEST_FAULTS_N shrinks the run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import msgspec
import trio

from mailcore import CampaignCreate, Mailcore, Settings
from mailcore.smtp import FaultPlan
from tests.db import query, scalar
from tests.peers import free_port

# On PostgreSQL the suite sends a fifth of it (the same variable sets both).
SIZES = {"sqlite": 100_000, "postgres": 20_000}
SPEC = "seed=7,rcpt4xx=0.1,rcpt5xx=0.05,disconnect=0.02,connect421=0.01,slow=0.002"
SCHEDULE = (2, 4)  # seconds before the first and second retry
CONNECTIONS = 8
JITTER = 0.9  # retries come at 0.9–1.1 × the schedule


def start_sink(port: int, log: Path) -> subprocess.Popen[str]:
    args = [sys.executable, "-m", "mailcore.cli", "sink", "--port", str(port)]
    args += ["--faults", SPEC, "--log", str(log)]
    proc = subprocess.Popen(
        args,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert "listening" in line, line
    return proc


def test_a_send_through_injected_faults_keeps_every_promise(
    tmp_path: Path, database_url: str, store_kind: str
) -> None:
    N = int(os.environ.get("MAILCORE_TEST_FAULTS_N", SIZES[store_kind]))
    port = free_port()
    log_path = tmp_path / "sink.jsonl"
    sink = start_sink(port, log_path)
    settings = Settings.load(
        env={},
        database_url=database_url,
        smtp_url=f"smtp://127.0.0.1:{port}",
        secret_key="k",
        retry_schedule=SCHEDULE,
        smtp_connections=CONNECTIONS,
        send_batch_size=500,
        max_in_flight=2_000,
        throttle_recover_seconds=5,
    )

    async def run() -> tuple[Any, dict[str, str], list[tuple[str, int, str | None]]]:
        async with Mailcore.open(settings) as mc, trio.open_nursery() as nursery:
            await nursery.start(mc.run_sender)
            acct = await mc.accounts.create("f", credit_micros=N * 300)
            scope = mc.account(acct.account_id)
            await scope.contacts.import_rows(
                {"email": f"r{i}@example.com", "tags": ["t"]} for i in range(N)
            )
            c = await scope.campaigns.create(
                msgspec.convert(
                    {
                        "name": "faults",
                        "subject": "hello {{email}}",
                        "from": {"email": "s@acme.test"},
                        "audience": {"tags": ["t"]},
                        "content": {"html": "<p>hi</p>"},
                    },
                    CampaignCreate,
                )
            )
            sent = await scope.campaigns.send(c.id)
            with trio.fail_after(1200):
                while (stats := await scope.campaigns.stats(c.id)).status != "sent":  # noqa: ASYNC110
                    await trio.sleep(0.5)
            states = {
                f"r{seq - first}@example.com": state
                for seq, state in await _states(mc, c.id)
                for first in [await _first_seq(mc)]
            }
            ledger = [
                e for e in await mc.store.ledger(acct.account_id) if e[2] == sent.cost.hold_id
            ]
            nursery.cancel_scope.cancel()
        return stats, states, ledger

    try:
        stats, states, ledger = trio.run(run)
    finally:
        sink.send_signal(signal.SIGTERM)
        sink.wait(timeout=60)

    plan = FaultPlan.parse(SPEC)
    rcpts: dict[str, list[tuple[int, float, int]]] = defaultdict(list)
    received: dict[str, int] = defaultdict(int)
    summary: dict[str, Any] = {}
    with log_path.open() as f:
        for line in f:
            record = json.loads(line)
            if record["type"] == "transaction":
                accepted = []
                for r in record["recipients"]:
                    rcpts[r["address"]].append((r["attempt"], r["time"], r["code"]))
                    if 200 <= r["code"] < 300:
                        accepted.append(r["address"])
                if record["stored"]:
                    for a in accepted:
                        received[a] += 1
            elif record["type"] == "summary":
                summary = record

    everyone = [f"r{i}@example.com" for i in range(N)]
    bounce = [r for r in everyone if plan.kind(r) == "bounce"]
    defer = [r for r in everyone if plan.kind(r) == "defer"]
    assert len(bounce) > N * 0.04 and len(defer) > N * 0.09  # the plan is what we think

    # Counts add up, and each recipient's state is what the plan says.
    assert stats.delivered + stats.bounced + stats.failed == N
    assert stats.pending == 0 and stats.deferred == 0
    for r in bounce:
        assert states[r] == "bounced", r
        attempts = rcpts[r]
        assert len(attempts) == 1 and attempts[0][2] == 550, (r, attempts)  # never retried
    assert stats.bounced == len(bounce)
    for r in defer:
        tries = sorted(rcpts[r])
        assert tries[0][2] == 451 and len(tries) >= 2, (r, tries)
        waited = tries[1][1] - tries[0][1]
        assert waited >= SCHEDULE[0] * JITTER - 0.05, (r, waited)  # never before its backoff
    # A second message only where the sink dropped the reply after storing the first.
    for r, n in received.items():
        if n > 1:
            lost = [a for a, _, _ in rcpts[r] if plan.disconnects(r, a)]
            assert len(lost) >= n - 1, (r, n, rcpts[r])
    for r in everyone:
        if states[r] == "delivered":
            assert received[r] >= 1, r
    duplicates = sum(n - 1 for n in received.values() if n > 1)
    assert duplicates <= summary["dropped_after_message"]

    # Never more connections than the limit; the 421s were seen and survived.
    assert summary["max_concurrent"] <= CONNECTIONS, summary
    assert summary["refused_connections"] > 0

    # Charged exactly what was delivered, once.
    assert [(kind, amount) for kind, amount, _ in ledger] == [
        ("hold", N * 300),
        ("post", -stats.delivered * 300),
        ("release", (N - stats.delivered) * 300),
    ]
    print(
        f"N={N} delivered={stats.delivered} bounced={stats.bounced} failed={stats.failed} "
        f"duplicates={duplicates} dropped={summary['dropped_after_message']} "
        f"refused={summary['refused_connections']} max_concurrent={summary['max_concurrent']}"
    )


async def _states(mc: Mailcore, campaign_id: str) -> list[tuple[int, str]]:
    return await trio.to_thread.run_sync(
        query,
        mc.settings.database_url,
        "SELECT contact_seq, state FROM recipients WHERE campaign_id = ?",
        (campaign_id,),
    )


async def _first_seq(mc: Mailcore) -> int:
    first: int = await trio.to_thread.run_sync(
        scalar, mc.settings.database_url, "SELECT min(seq) FROM contacts"
    )
    return first
