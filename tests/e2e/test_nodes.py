"""Several nodes on one database: an API process and three sender processes
(``mailcore serve --role …``) deliver one campaign through a real SMTP server; one sender
is killed with SIGKILL mid-send. Every recipient is delivered, duplicates stay within what
the killed node had in flight, the hold is settled once, and the survivors share the rest.

The suite sends 20,000 recipients; ``MAILCORE_TEST_NODES_RECIPIENTS=100000`` runs the
issue's full size.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import msgspec
import trio

from mailcore import CampaignCreate, Mailcore, Settings
from tests.db import query, scalar
from tests.peers import aiosmtpd_server, free_port

N = int(os.environ.get("MAILCORE_TEST_NODES_RECIPIENTS", "20000"))
BATCH = 200
CONNECTIONS = 4
# Leased and not yet recorded by one node at any instant, at most: the most one killed
# node can have sent without recording it.
MAX_IN_FLIGHT = 2 * BATCH
LEASE_SECONDS = 3.0


def start(role: str, env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mailcore.cli", "serve", "--role", role, "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            r = httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=2)
            if r.status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"{role} node did not start: {log.read_text()[-2000:]}")


def health(port: int) -> dict[str, Any]:
    r = httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=10)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def delivered_by_node(url: str, campaign_id: str) -> dict[str, int]:
    """Who sent what: the node whose lease a delivered recipient was recorded under."""
    return {
        owner: n
        for owner, n in query(
            url,
            "SELECT lease_owner, count(*) FROM recipients "
            "WHERE campaign_id = ? AND state = 'delivered' GROUP BY lease_owner",
            (campaign_id,),
        )
    }


def test_three_senders_one_campaign_one_killed(database_url: str, tmp_path: Path) -> None:
    url = database_url
    settings = Settings.load(env={}, database_url=url)

    async def prepare() -> tuple[str, str, str]:
        async with Mailcore.open(settings) as mc:
            acct = await mc.accounts.create("nodes", credit_micros=N * 300 + 1_000_000)
            scope = mc.account(acct.account_id)
            await scope.contacts.import_rows(
                {"email": f"r{i}@example.com", "tags": ["t"]} for i in range(N)
            )
            c = await scope.campaigns.create(
                msgspec.convert(
                    {
                        "name": "nodes",
                        "subject": "hello {{email}}",
                        "from": {"email": "s@acme.com"},
                        "audience": {"tags": ["t"]},
                        "content": {"html": "<p>hi</p>"},
                    },
                    CampaignCreate,
                )
            )
            return acct.account_id, acct.api_key, c.id

    account_id, api_key, campaign_id = trio.run(prepare)
    with aiosmtpd_server(keep_content=False) as (smtp_port, smtp):
        env = {
            **os.environ,
            "MAILCORE_DATABASE_URL": url,
            "MAILCORE_SMTP_URL": f"smtp://127.0.0.1:{smtp_port}",
            "MAILCORE_SEND_BATCH_SIZE": str(BATCH),
            "MAILCORE_SMTP_CONNECTIONS": str(CONNECTIONS),
            "MAILCORE_MAX_IN_FLIGHT": str(MAX_IN_FLIGHT),
            "MAILCORE_LEASE_SECONDS": str(LEASE_SECONDS),
            "MAILCORE_RETRY_SCHEDULE": "1",
            "MAILCORE_DATABASE_POOL_SIZE": "4",
        }
        api_port = free_port()
        ports = [free_port() for _ in range(3)]
        procs: list[subprocess.Popen[bytes]] = []
        try:
            procs.append(start("api", env, api_port, tmp_path / "api.log"))
            for i, port in enumerate(ports):
                procs.append(start("sender", env, port, tmp_path / f"sender{i}.log"))
            nodes = [health(p)["node"] for p in ports]
            assert health(api_port)["roles"] == ["api"] and health(api_port)["sender"] is None
            assert all(health(p)["roles"] == ["sender"] for p in ports)
            # A sender node serves its health only, not the API.
            assert httpx.get(f"http://127.0.0.1:{ports[0]}/v1/pricing").status_code == 404

            auth = {"Authorization": f"Bearer {api_key}"}
            api = f"http://127.0.0.1:{api_port}/v1/mail/campaigns/{campaign_id}"
            started = time.monotonic()
            r = httpx.post(f"{api}/send", headers=auth, timeout=60)
            assert r.status_code == 200, r.text
            hold_id = r.json()["cost"]["holdId"]

            # Mid-send, once every sender has delivered a share, kill the first one.
            deadline = time.monotonic() + 300 + N / 20
            while True:
                shares = delivered_by_node(url, campaign_id)
                if all(shares.get(n, 0) >= BATCH for n in nodes) and sum(shares.values()) >= N // 4:
                    break
                assert sum(shares.values()) < N * 0.6, f"no kill before 60 % sent: {shares}"
                assert time.monotonic() < deadline, shares
                time.sleep(0.05)
            victim = procs[1]
            in_flight_seen = health(ports[0])["sender"]["inFlight"]
            victim.send_signal(signal.SIGKILL)
            victim.wait(timeout=10)
            killed_at = time.monotonic() - started
            at_kill = delivered_by_node(url, campaign_id)
            received_at_kill = len(smtp.messages)

            deadline = time.monotonic() + 300 + N / 20  # 20/s: far below a loaded machine's
            while True:
                stats = httpx.get(f"{api}/stats", headers=auth, timeout=30).json()
                if stats["status"] == "sent":
                    break
                assert time.monotonic() < deadline, stats
                time.sleep(0.2)
            elapsed = time.monotonic() - started
            # The survivors see the send finished (whichever settled it) and forget it.
            deadline = time.monotonic() + 30
            while any(health(p)["sender"]["campaigns"] for p in ports[1:]):
                assert time.monotonic() < deadline, [health(p) for p in ports[1:]]
                time.sleep(0.1)
        finally:
            for proc in procs:
                proc.kill()
                proc.wait(timeout=10)

        counts = smtp.count_by_recipient()
        assert set(counts) == {f"r{i}@example.com" for i in range(N)}, "a recipient was lost"
        duplicates = sum(n - 1 for n in counts.values())
        # Only what the killed node had sent and not yet recorded can go out twice.
        assert duplicates <= MAX_IN_FLIGHT, duplicates
        assert stats["delivered"] == N and stats["pending"] == 0
        assert stats["cost"]["actualMicros"] == N * 300

    # The hold: placed once, settled once (posted for every delivery, nothing released).
    entries = [
        (kind, amount)
        for kind, amount in query(
            url,
            "SELECT kind, amount FROM ledger WHERE account_id = ? AND hold_id = ? ORDER BY seq",
            (account_id, hold_id),
        )
    ]
    assert entries == [("hold", N * 300), ("post", -N * 300), ("release", 0)]
    assert scalar(url, "SELECT status FROM holds WHERE id = ?", (hold_id,)) == "settled"
    assert scalar(url, "SELECT count(*) FROM sends WHERE campaign_id = ?", (campaign_id,)) == 1

    # The work: every delivered recipient is recorded under one of the three nodes, the
    # killed one's share stopped growing, and the survivors shared what was left.
    final = delivered_by_node(url, campaign_id)
    assert set(final) <= set(nodes) and sum(final.values()) == N
    killed, a, b = nodes
    assert final.get(killed, 0) == at_kill.get(killed, 0) > 0
    left = N - sum(at_kill.values())
    gained = {n: final[n] - at_kill.get(n, 0) for n in (a, b)}
    assert sum(gained.values()) == left
    assert min(gained.values()) >= left * 0.15, gained
    shares = Counter({n[-6:]: final.get(n, 0) for n in nodes})
    print(
        f"\nrecipients={N} senders=3 killed_after={killed_at:.1f}s "
        f"received_before_kill={received_at_kill} duplicates={duplicates} "
        f"bound={MAX_IN_FLIGHT} in_flight_seen_before_kill={in_flight_seen} "
        f"delivered_by_node={dict(shares)} survivors_after_kill={list(gained.values())} "
        f"elapsed={elapsed:.1f}s ({N / elapsed:.0f}/s)"
    )
