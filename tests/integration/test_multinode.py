"""What several nodes on one database rely on, checked on both stores with two Mailcore
instances (two pools of connections, as two processes have): claims never overlap, a
finished send settles once, a starting node leaves live nodes' leases alone and takes
back at once what stopped senders of its machine held (SQLite),
renewed leases are not taken over, and 64 concurrent sends against a wallet funded for
exactly N holds: exactly N succeed."""

from __future__ import annotations

import json
import re
import sqlite3
import sys
from contextlib import closing
from pathlib import Path

import anyio
import msgspec
import psycopg
import pytest
import trio

from mailcore import CampaignCreate, InsufficientFunds, Mailcore, Settings
from mailcore.node import new_node_id, sender_running
from mailcore.store import RecipientResult, sqlite_path
from mailcore.store.schema import POSTGRES_MIGRATIONS, SQLITE_MIGRATIONS
from tests.conftest import Api
from tests.db import query, scalar
from tests.peers import wait_until

pytestmark = pytest.mark.anyio

NOW = 1_800_000_000.0


def campaign(tag: str = "t") -> CampaignCreate:
    return msgspec.convert(
        {
            "name": "c",
            "subject": "hi",
            "from": {"email": "s@acme.com"},
            "audience": {"tags": [tag]},
            "content": {"html": "<p>hi</p>"},
        },
        CampaignCreate,
    )


async def sending(mc: Mailcore, recipients: int) -> tuple[str, str]:
    """An account with a campaign being sent to ``recipients`` contacts (no sender runs)."""
    account_id = (await mc.accounts.create("n", credit_micros=recipients * 300)).account_id
    scope = mc.account(account_id)
    await scope.contacts.import_rows(
        {"email": f"r{i}@x.com", "tags": ["t"]} for i in range(recipients)
    )
    c = await scope.campaigns.create(campaign())
    await scope.campaigns.send(c.id)
    return account_id, c.id


async def test_concurrent_claims_from_two_nodes_never_overlap(settings: Settings) -> None:
    async with Mailcore.open(settings) as a, Mailcore.open(settings) as b:
        _, campaign_id = await sending(a, 2_000)
        claimed: list[tuple[str, int]] = []

        async def claimer(mc: Mailcore, owner: str) -> None:
            while True:
                work = await mc.store.claim_recipients(campaign_id, 37, NOW, NOW + 60, owner)
                if not work:
                    return
                claimed.extend((owner, w.contact_seq) for w in work)

        async with trio.open_nursery() as nursery:
            for i in range(6):
                nursery.start_soon(claimer, a if i % 2 else b, f"node{i}")
        seqs = [seq for _, seq in claimed]
        assert len(seqs) == len(set(seqs)) == 2_000  # each recipient claimed exactly once
        assert len({owner for owner, _ in claimed}) > 1  # and the work was shared
        owners = query(
            settings.database_url,
            "SELECT count(DISTINCT lease_owner) FROM recipients "
            "WHERE campaign_id = ? AND state = 'sending'",
            (campaign_id,),
        )
        assert owners[0][0] == len({owner for owner, _ in claimed})


async def test_a_pause_from_another_node_stops_claims_at_once(settings: Settings) -> None:
    """A sender that read the send as sending before the pause (its status snapshot is
    stale) claims nothing once the pause has committed; resuming lets it claim again."""
    async with Mailcore.open(settings) as api, Mailcore.open(settings) as sender:
        account_id, campaign_id = await sending(api, 200)
        first = await sender.store.claim_recipients(campaign_id, 50, NOW, NOW + 60, "s")
        assert len(first) == 50
        scope = api.account(account_id)
        assert (await scope.campaigns.pause(campaign_id)).status == "paused"
        assert await sender.store.claim_recipients(campaign_id, 50, NOW, NOW + 60, "s") == []
        counts = await sender.store.recipient_counts(campaign_id)
        assert counts.get("sending") == 50 and counts.get("queued") == 150
        await scope.campaigns.resume(campaign_id)
        again = await sender.store.claim_recipients(campaign_id, 500, NOW, NOW + 60, "s")
        assert len(again) == 150
        await scope.campaigns.cancel(campaign_id)
        assert await sender.store.claim_recipients(campaign_id, 50, NOW + 61, NOW + 90) == []


async def test_claims_stop_at_the_batch_whatever_the_statistics(
    settings: Settings, store_kind: str
) -> None:
    """Statistics analysed while a campaign was nearly sent, then its recipients queued
    again (as the next big campaign's are). A single ordered query over every open state
    was then planned as a scan of every queued row plus a sort, per claim; each of the
    claim's picks is an index condition instead, with no sort and no sequential scan, and
    the update of the picked rows a TID scan."""
    if store_kind != "postgres":
        pytest.skip("a PostgreSQL planner question")
    from mailcore.store import postgres as pg

    async with Mailcore.open(settings) as mc:
        _, campaign_id = await sending(mc, 20_000)
    url = settings.database_url
    # Analysed near the end of the send: one recipient in twenty still queued.
    query(
        url,
        "UPDATE recipients SET state = 'delivered' WHERE campaign_id = ? AND contact_seq %% 20 > 0",
        (campaign_id,),
    )
    query(url, "ANALYZE recipients")
    query(url, "UPDATE recipients SET state = 'queued' WHERE campaign_id = ?", (campaign_id,))
    ordered_over_all_open = (
        "EXPLAIN (FORMAT JSON) SELECT contact_seq FROM recipients WHERE campaign_id = %s "
        "AND state IN ('queued', 'deferred', 'sending') AND (state = 'queued' OR "
        "(state = 'deferred' AND next_attempt_at <= %s) OR (state = 'sending' AND "
        "lease_until < %s)) ORDER BY contact_seq LIMIT %s FOR UPDATE SKIP LOCKED"
    )
    with psycopg.connect(url) as conn:
        first_design = json.dumps(
            conn.execute(ordered_over_all_open.encode(), (campaign_id, NOW, NOW, 500)).fetchone()
        )
        conn.rollback()
        conn.execute(pg._INDEX_SCANS_ONLY.encode())
        plans = [
            json.dumps(conn.execute(f"EXPLAIN (FORMAT JSON) {sql}".encode(), args).fetchone())
            for sql, args in (
                (pg._PICK_DUE, (campaign_id, NOW, 500)),
                (pg._PICK_QUEUED, (campaign_id, 500)),
            )
        ]
        # The claim itself updates the picked rows by address (a TID scan): by
        # "contact_seq = ANY(…)", a campaign newer than the statistics was a walk of every
        # one of its recipients, per claim.
        tids = [r[0] for r in conn.execute(pg._PICK_QUEUED.encode(), (campaign_id, 500))]
        by_seq = json.dumps(
            conn.execute(
                b"EXPLAIN (FORMAT JSON) UPDATE recipients r SET state = 'sending' "
                b"WHERE r.campaign_id = %s AND r.contact_seq = ANY(%s)",
                ("cmp_new_since_the_statistics", list(range(1, 501))),
            ).fetchone()
        )
        # Results go back by primary key, not through every recipient in flight.
        n = 500
        record = json.dumps(
            conn.execute(
                f"EXPLAIN (FORMAT JSON) {pg._RECORD}".encode(),
                (
                    "2026-11-30T00:00:00Z",
                    ["cmp_new_since_the_statistics"] * n,
                    list(range(1, n + 1)),
                    ["delivered"] * n,
                    ["250 ok"] * n,
                    [None] * n,
                    [1] * n,
                    [NOW] * n,
                ),
            ).fetchone()
        )
        conn.execute(pg._TIDS_ONLY.encode())
        claim = json.dumps(
            conn.execute(
                f"EXPLAIN (FORMAT JSON) {pg._CLAIM}".encode(),
                (NOW, "n", tids, "cmp_new_since_the_statistics"),
            ).fetchone()
        )
        conn.rollback()
    assert '"Node Type": "Sort"' in first_design  # the hazard is real on this server
    for plan in plans:
        assert '"Node Type": "Sort"' not in plan and '"Seq Scan"' not in plan, plan
        assert '"Index Cond"' in plan and "state = " in plan.split('"Index Cond"')[1][:200]
    assert len(tids) == 500
    assert '"Tid Scan"' in claim and '"Index Scan"' not in claim, claim
    assert '"recipients_pkey"' in record and '"recipients_state"' not in record, record
    # ... as it still is for a campaign the statistics have not seen (any new one):
    walk = re.search(r'"Index Cond": "([^"]*)"', by_seq)
    assert walk is not None and "contact_seq" not in walk[1], by_seq
    assert '"recipients_state"' in by_seq, by_seq
    async with Mailcore.open(settings) as mc:
        work = await mc.store.claim_recipients(campaign_id, 500, NOW, NOW + 60, "n")
        assert len(work) == 500
        assert [w.contact_seq for w in work] == sorted(w.contact_seq for w in work)
        # Due retries come first; an expired lease only once a heartbeat recovered it.
        query(
            url,
            "UPDATE recipients SET state = 'deferred', next_attempt_at = ? "
            "WHERE campaign_id = ? AND contact_seq IN (SELECT contact_seq FROM recipients "
            "WHERE campaign_id = ? AND state = 'queued' ORDER BY contact_seq DESC LIMIT 3)",
            (NOW - 1, campaign_id, campaign_id),
        )
        deferred = _deferred_seqs(url, campaign_id)
        retries = await mc.store.claim_recipients(campaign_id, 3, NOW + 61, NOW + 120, "m")
        assert len(deferred) == 3 and {w.contact_seq for w in retries} == deferred
        assert await mc.store.recover_leases(NOW + 61) == 500
        rest = await mc.store.claim_recipients(campaign_id, 20_000, NOW + 61, NOW + 120, "m")
        assert len(rest) == 20_000 - 3  # everything else, the recovered 500 included


def _deferred_seqs(url: str, campaign_id: str) -> set[int]:
    rows = query(
        url,
        "SELECT contact_seq FROM recipients WHERE campaign_id = ? AND state = 'deferred'",
        (campaign_id,),
    )
    return {r[0] for r in rows}


async def test_a_finished_send_is_settled_exactly_once(settings: Settings) -> None:
    async with Mailcore.open(settings) as a, Mailcore.open(settings) as b:
        account_id, campaign_id = await sending(a, 300)
        work = await a.store.claim_recipients(campaign_id, 1_000, NOW, NOW + 60, "n1")
        await a.store.record_results(
            [
                RecipientResult(
                    campaign_id=campaign_id, contact_seq=w.contact_seq, state="delivered"
                )
                for w in work
            ],
            "2026-11-30T00:00:00Z",
        )
        finished: list[object] = []

        async def finish(mc: Mailcore) -> None:
            done = await mc.store.finish_send_if_done(campaign_id, "2026-11-30T00:00:01Z")
            if done is not None:
                finished.append(done)

        # Every node sees the send finish at once and tries to settle it.
        async with trio.open_nursery() as nursery:
            for i in range(16):
                nursery.start_soon(finish, a if i % 2 else b)
        assert len(finished) == 1
        ledger = [(k, amt) for k, amt, h in await b.store.ledger(account_id) if h is not None]
        assert ledger == [("hold", 90_000), ("post", -90_000), ("release", 0)]
        wallet = await b.account(account_id).wallet.get()
        assert (wallet.balance_micros, wallet.held_micros) == (0, 0)


async def test_a_starting_node_leaves_live_leases_alone(settings: Settings) -> None:
    async with Mailcore.open(settings) as live, Mailcore.open(settings) as starting:
        _, campaign_id = await sending(live, 50)
        work = await live.store.claim_recipients(campaign_id, 50, NOW, NOW + 30, "live")
        assert len(work) == 50
        released = await starting.store.recover_leases(NOW + 1)
        assert released == 0  # those leases belong to a live node
        assert await starting.store.claim_recipients(campaign_id, 50, NOW + 1, NOW + 31) == []
        # The live node renews (its heartbeat); the lease outlives its first term.
        assert await live.store.renew_leases("live", NOW + 120) == 50
        assert await starting.store.recover_leases(NOW + 60) == 0
        assert await starting.store.claim_recipients(campaign_id, 50, NOW + 60, NOW + 90) == []
        # The node dies: nobody renews, the leases expire, the others take over.
        assert await starting.store.recover_leases(NOW + 121) == 50
        taken = await starting.store.claim_recipients(campaign_id, 50, NOW + 121, NOW + 150, "s")
        assert len(taken) == 50


async def test_a_starting_sender_takes_back_at_once_what_stopped_senders_held(
    settings: Settings,
) -> None:
    """Leases of a sender known to have stopped go back to the queue without waiting for
    them to expire on SQLite, whose senders all run on its machine: this process's own
    earlier sender, or a process that is gone. A live process's stay its own."""
    async with Mailcore.open(settings) as mc:
        _, campaign_id = await sending(mc, 30)
        host = new_node_id().rsplit(":", 2)[0]  # host and pid namespace
        child = await anyio.open_process([sys.executable, "-c", "import time; time.sleep(60)"])
        try:
            alive = f"{host}:{child.pid}:aaaaaa"
            stopped_here = new_node_id()  # this process, its sender not running
            for owner in (alive, stopped_here):
                work = await mc.store.claim_recipients(campaign_id, 10, NOW, NOW + 60, owner)
                assert len(work) == 10
            running = new_node_id()
            with sender_running(running):
                work = await mc.store.claim_recipients(campaign_id, 10, NOW, NOW + 60, running)
                assert len(work) == 10
                released = await mc.store.recover_leases(NOW + 1)
                if mc.store.kind == "sqlite":
                    assert released == 10  # stopped_here's
                    child.kill()
                    await child.wait()
                    assert await mc.store.recover_leases(NOW + 1) == 10  # alive's, now gone
                else:
                    assert released == 0  # PostgreSQL: nodes of any machine, expiry tells
                counts = await mc.store.recipient_counts(campaign_id)
                assert counts.get("sending") == (10 if mc.store.kind == "sqlite" else 30)
                # Expired, every lease goes back, a running sender's too (it stopped
                # renewing them).
                assert await mc.store.recover_leases(NOW + 61) == counts["sending"]
        finally:
            if child.returncode is None:
                child.kill()
                await child.wait()


async def test_64_concurrent_sends_on_a_wallet_funded_for_exactly_n(settings: Settings) -> None:
    """64 campaigns of 5 recipients sent at once from two nodes; the wallet covers exactly
    10 holds of 5 × 300 micros: exactly 10 sends start, 54 are refused and stay drafts."""
    n, audience, price = 10, 5, 300
    async with Mailcore.open(settings) as a, Mailcore.open(settings) as b:
        account_id = (await a.accounts.create("w", credit_micros=n * audience * price)).account_id
        await a.account(account_id).contacts.import_rows(
            {"email": f"r{i}@x.com", "tags": ["t"]} for i in range(audience)
        )
        ids = [(await a.account(account_id).campaigns.create(campaign())).id for _ in range(64)]
        outcomes: dict[str, str] = {}

        async def send(mc: Mailcore, campaign_id: str) -> None:
            try:
                await mc.account(account_id).campaigns.send(campaign_id)
                outcomes[campaign_id] = "sending"
            except InsufficientFunds:
                outcomes[campaign_id] = "402"

        async with trio.open_nursery() as nursery:
            for i, campaign_id in enumerate(ids):
                nursery.start_soon(send, a if i % 2 else b, campaign_id)
        assert list(outcomes.values()).count("sending") == n
        assert list(outcomes.values()).count("402") == 64 - n
        for campaign_id, outcome in outcomes.items():
            c = await b.account(account_id).campaigns.get(campaign_id)
            assert c.status == ("sending" if outcome == "sending" else "draft")
        wallet = await b.account(account_id).wallet.get()
        assert wallet.available_micros == 0 and len(wallet.holds) == n
        assert wallet.held_micros == n * audience * price == wallet.balance_micros
        plans = scalar(settings.database_url, "SELECT count(*) FROM recipients")
        assert plans == n * audience  # refused sends wrote no plan


async def test_health_over_http(api: Api, store_kind: str) -> None:
    async with api.anonymous() as http:
        r = await http.get("/v1/health")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "ok" and body["storeReachable"] is True
    assert body["store"] == {"sqlite": "sqlite", "postgres": "postgresql"}[store_kind]
    assert body["node"] == api.mc.node.id and body["schemaVersion"] == len(SQLITE_MIGRATIONS)
    assert body["roles"] == ["api", "sender", "webhooks"] and body["sender"] is None


@pytest.mark.stores("postgres")
async def test_health_is_503_while_postgres_refuses_connections(api: Api) -> None:
    url = api.mc.settings.database_url
    name = url.rsplit("/", 1)[1]
    admin = url.rsplit("/", 1)[0] + "/postgres"
    try:
        query(admin, f"ALTER DATABASE {name} ALLOW_CONNECTIONS false")
        query(
            admin,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = ?",
            (name,),
        )
        async with api.anonymous() as http:
            r = await http.get("/v1/health")
        assert r.status_code == 503, r.text
        assert r.json()["status"] == "unavailable" and r.json()["storeReachable"] is False
    finally:
        query(admin, f"ALTER DATABASE {name} ALLOW_CONNECTIONS true")

    async def healthy() -> bool:
        return (await api.mc.health()).status == "ok"

    await wait_until(healthy, seconds=30)  # the pool reconnects by itself


@pytest.mark.stores("postgres")
async def test_both_migration_histories_build_the_same_tables(
    database_url: str, tmp_path: Path
) -> None:
    assert len(POSTGRES_MIGRATIONS) == len(SQLITE_MIGRATIONS)
    sqlite_url = f"sqlite:///{tmp_path}/m.db"
    async with Mailcore.open(Settings.load(env={}, database_url=sqlite_url)):
        pass
    with closing(sqlite3.connect(sqlite_path(sqlite_url))) as conn:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name != 'sqlite_sequence'"
            )
        ]
        lite = {t: {r[1] for r in conn.execute(f"PRAGMA table_info({t})")} for t in tables}
    pg: dict[str, set[str]] = {}
    for table, column in query(
        database_url,
        "SELECT table_name, column_name FROM information_schema.columns "
        "WHERE table_schema = 'public'",
    ):
        pg.setdefault(table, set()).add(column)
    assert pg == lite
    version = scalar(database_url, "SELECT max(version) FROM schema_version")
    assert version == len(POSTGRES_MIGRATIONS)


async def test_two_webhook_nodes_deliver_each_event_once(settings: Settings) -> None:
    import json

    from mailcore.models import WebhookCreate
    from mailcore.webhooks.events import EmailEventData, record
    from tests.peers import WebhookReceiver

    hooks = msgspec.structs.replace(settings, webhook_allow_private=True)
    receiver = WebhookReceiver()
    async with (
        Mailcore.open(hooks) as a,
        Mailcore.open(hooks) as b,
        trio.open_nursery() as nursery,
    ):
        url = (await nursery.start(receiver.serve))[0] + "/hook"
        acct = a.account((await a.accounts.create("t")).account_id)
        await acct.webhooks.create(WebhookCreate(url=url, events=["email.delivered"]))
        events = [
            record(
                acct.account_id,
                "email.delivered",
                EmailEventData(campaign_id="cmp_x", contact_id=None, email=None, email_id=f"e{i}"),
                "2026-11-30T00:00:00Z",
            )
            for i in range(300)
        ]
        await a.store.emit(events, 0.0)
        await nursery.start(a.run_webhooks)
        await nursery.start(b.run_webhooks)
        await wait_until(lambda: len(receiver.requests) >= 300, seconds=60)
        await trio.sleep(0.5)  # anything sent twice would have arrived by now
        nursery.cancel_scope.cancel()
    received = [json.loads(body)["id"] for _, body in receiver.requests]
    assert sorted(received) == sorted(e.id for e in events)  # each once, none twice
    delivered = (a.node.webhooks, b.node.webhooks)
    assert all(d is not None for d in delivered)
    assert sum(d.delivered for d in delivered if d is not None) == 300


@pytest.mark.stores("sqlite")
async def test_processes_sharing_a_sqlite_file_wait_for_each_other(tmp_path: Path) -> None:
    """Processes of one machine sharing the file: two first starts at once migrate it
    once, and a write waits out another process's long transaction (longer than the
    busy timeout, as freezing a plan of millions of recipients can be) instead of
    failing with "database is locked"."""
    url = f"sqlite:///{tmp_path}/shared.db"
    # Each migration step rereads the version inside its own write transaction.
    settings = Settings.load(env={}, database_url=url)
    async with trio.open_nursery() as nursery:
        for _ in range(2):
            nursery.start_soon(lambda: _open_and_close(settings))
    with closing(sqlite3.connect(sqlite_path(url))) as conn:
        versions = [v for (v,) in conn.execute("SELECT version FROM schema_version")]
    assert versions == list(range(1, len(SQLITE_MIGRATIONS) + 1))

    async with Mailcore.open(settings) as mc:
        assert mc.store._writer is not None
        mc.store._writer.execute("PRAGMA busy_timeout=50")  # each try gives up after 50 ms
        other = sqlite3.connect(sqlite_path(url), isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another process's long transaction
        account = None

        async def create() -> None:
            nonlocal account
            account = await mc.accounts.create("w", credit_micros=0)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(create)
            await trio.sleep(0.5)  # ten times the busy timeout
            assert account is None  # still waiting, not failed
            other.execute("COMMIT")
        other.close()
        assert account is not None
        assert (await mc.account(account.account_id).wallet.get()).balance_micros == 0


async def _open_and_close(settings: Settings) -> None:
    async with Mailcore.open(settings):
        pass


async def test_a_claim_returns_each_recipients_work_exactly(
    settings: Settings, store_kind: str
) -> None:
    """Retries due, leases run out and queued recipients, each with its attempts, the
    exact time of its first attempt and its contact's current fields; a deleted contact's
    recipient comes with no contact (it is recorded as suppressed)."""
    async with Mailcore.open(settings) as mc:
        account_id = (await mc.accounts.create("n", credit_micros=8 * 300)).account_id
        scope = mc.account(account_id)
        await scope.contacts.import_rows(
            {
                "email": f"r{i}@x.com",
                "firstName": f"Zoë {i}",
                "lastName": None if i % 2 else "L",
                "tags": ["t"],
                "customFields": {"n": i, "f": i / 3, "s": '€ " \\ {}', "b": i % 2 == 0},
            }
            for i in range(8)
        )
        c = await scope.campaigns.create(campaign())
        await scope.campaigns.send(c.id)
        store = mc.store
        first = await store.claim_recipients(c.id, 3, NOW, NOW + 60, "a")
        assert [w.attempts for w in first] == [0, 0, 0]
        assert all(w.first_attempt_at is None for w in first)
        attempted_at = NOW + 0.1234567890123  # every digit must come back
        await store.record_results(
            [
                RecipientResult(
                    campaign_id=c.id,
                    contact_seq=w.contact_seq,
                    state="deferred",
                    reply="451 later",
                    next_attempt_at=NOW + (10, 20, 50)[i],
                    attempted_at=attempted_at,
                )
                for i, w in enumerate(first)
            ],
            "2027-01-15T08:00:00Z",
        )
        leased = await store.claim_recipients(c.id, 2, NOW, NOW + 30, "b")  # expires at +30
        contacts = (await scope.contacts.list(limit=100)).data
        gone = next(x for x in contacts if x.email == "r7@x.com")
        await scope.contacts.delete(gone.id)
        # At +35: two retries are due (+10, +20), the third not (+50); the lease of "b"
        # has run out (+30: SQLite's claim takes it over, PostgreSQL's lease recovery
        # queues it again); the rest are queued.
        if store_kind == "postgres":
            assert await store.recover_leases(NOW + 35) == 2
        again = await store.claim_recipients(c.id, 100, NOW + 35, NOW + 90, "c")
        by_seq = {w.contact_seq: w for w in again}
        retried = [by_seq[w.contact_seq] for w in first[:2]]
        assert [w.attempts for w in retried] == [1, 1]
        assert [w.first_attempt_at for w in retried] == [attempted_at, attempted_at]
        assert first[2].contact_seq not in by_seq  # due at +50, not yet
        assert {w.contact_seq for w in leased} <= by_seq.keys()
        assert len(again) == 8 - 1  # all but the third's retry
        assert [w.contact_seq for w in again] == sorted(by_seq)
        for w in again:
            i = int(w.email[1:].split("@")[0]) if w.email else 7
            if i == 7:
                assert (w.email, w.contact_status, w.custom_fields) == (None, None, {})
                continue
            assert w.contact_status == "subscribed"
            assert (w.first_name, w.last_name) == (f"Zoë {i}", None if i % 2 else "L")
            assert w.custom_fields == {"n": i, "f": i / 3, "s": '€ " \\ {}', "b": i % 2 == 0}
