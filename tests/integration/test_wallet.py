"""The wallet: integer micros, an append-only ledger, two-phase holds resolved once, and an
available balance that never goes below zero, also under concurrent requests."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

import psycopg
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailcore import HoldAlreadyResolved, InsufficientFunds, Mailcore, NotFound, Settings
from tests.conftest import Tenant
from tests.db import query, scalar

pytestmark = pytest.mark.anyio


async def test_hold_post_release_exactly_once(mc: Mailcore) -> None:
    acct = mc.account((await mc.accounts.create("w", credit_micros=5_000_000)).account_id)
    hold = await acct.wallet.place_hold(3_072_000, "cmp_x")
    assert hold.id.startswith("hold_") and hold.amount == 3.072
    w = await acct.wallet.get()
    assert (w.balance_micros, w.held_micros, w.available_micros) == (
        5_000_000,
        3_072_000,
        1_928_000,
    )
    assert [h.id for h in w.holds] == [hold.id]
    res = await acct.wallet.settle_hold(hold.id, 3_000_000)
    assert (res.posted_micros, res.released_micros) == (3_000_000, 72_000)
    with pytest.raises(HoldAlreadyResolved):
        await acct.wallet.settle_hold(hold.id, 0)
    with pytest.raises(NotFound):
        await acct.wallet.settle_hold("hold_nope", 0)
    w = await acct.wallet.get()
    assert (w.balance_micros, w.held_micros, w.holds) == (2_000_000, 0, [])
    ledger = await mc.store.ledger(acct.account_id)
    assert [k for k, _, _ in ledger] == ["credit", "hold", "post", "release"]
    # The balance is the sum of credits, debits and posts.
    assert sum(a for k, a, _ in ledger if k in ("credit", "debit", "post")) == w.balance_micros


async def test_cannot_post_more_than_held_or_overdraw(mc: Mailcore) -> None:
    acct = mc.account((await mc.accounts.create("w", credit_micros=1_000)).account_id)
    with pytest.raises(InsufficientFunds):
        await acct.wallet.place_hold(1_001)
    hold = await acct.wallet.place_hold(1_000)
    with pytest.raises(InsufficientFunds):
        await acct.wallet.place_hold(1)
    with pytest.raises(InsufficientFunds):
        await acct.wallet.credit(-1)  # all of it is held
    with pytest.raises(Exception, match="cannot post"):
        await acct.wallet.settle_hold(hold.id, 1_001)
    await acct.wallet.release_hold(hold.id)
    assert (await acct.wallet.get()).available_micros == 1_000


async def test_ledger_is_append_only(mc: Mailcore, settings: Settings) -> None:
    acct = await mc.accounts.create("w", credit_micros=1_000)
    url = settings.database_url
    with pytest.raises((sqlite3.DatabaseError, psycopg.Error), match="append-only"):
        query(url, "UPDATE ledger SET amount = 5 WHERE account_id = ?", (acct.account_id,))
    with pytest.raises((sqlite3.DatabaseError, psycopg.Error), match="append-only"):
        query(url, "DELETE FROM ledger")
    assert scalar(url, "SELECT count(*) FROM ledger WHERE account_id = ?", (acct.account_id,)) == 1


async def test_64_concurrent_holds_from_two_processes_never_overdraw(settings: Settings) -> None:
    """Two Mailcore instances (as two processes would) on one database file race 64 holds
    against a wallet funded for exactly 10: exactly 10 succeed."""
    async with Mailcore.open(settings) as a, Mailcore.open(settings) as b:
        account_id = (await a.accounts.create("w", credit_micros=10 * 300_000)).account_id
        results: list[str] = []

        async def one(mc: Mailcore, i: int) -> None:
            try:
                await mc.account(account_id).wallet.place_hold(300_000, f"r{i}")
                results.append("ok")
            except InsufficientFunds:
                results.append("402")

        async with trio.open_nursery() as nursery:
            for i in range(64):
                nursery.start_soon(one, a if i % 2 else b, i)
        assert results.count("ok") == 10 and results.count("402") == 54
        w = await a.account(account_id).wallet.get()
        assert (w.available_micros, w.held_micros, len(w.holds)) == (0, 3_000_000, 10)

        # Settling every hold concurrently, twice each: each resolves exactly once.
        outcomes: list[str] = []

        async def settle(mc: Mailcore, hold_id: str) -> None:
            try:
                await mc.account(account_id).wallet.settle_hold(hold_id, 100_000)
                outcomes.append("settled")
            except HoldAlreadyResolved:
                outcomes.append("again")

        async with trio.open_nursery() as nursery:
            for h in w.holds:
                nursery.start_soon(settle, a, h.id)
                nursery.start_soon(settle, b, h.id)
        assert outcomes.count("settled") == 10 and outcomes.count("again") == 10
        w = await b.account(account_id).wallet.get()
        assert (w.balance_micros, w.held_micros) == (2_000_000, 0)


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    credit=st.integers(0, 10_000),
    ops=st.lists(
        st.tuples(st.sampled_from(["hold", "credit", "settle"]), st.integers(-3_000, 3_000)),
        max_size=25,
    ),
)
def test_wallet_invariants_under_random_operations(
    new_database_url: Callable[[], str], credit: int, ops: list[tuple[str, int]]
) -> None:
    """Whatever the sequence: available ≥ 0, held = the open holds, balance = the ledger."""
    url = new_database_url()

    async def run() -> None:
        async with Mailcore.open(Settings.load(env={}, database_url=url)) as mc:
            acct = mc.account((await mc.accounts.create("w", credit_micros=credit)).account_id)
            open_holds: dict[str, int] = {}
            for op, amount in ops:
                try:
                    if op == "hold":
                        h = await acct.wallet.place_hold(abs(amount))
                        open_holds[h.id] = abs(amount)
                    elif op == "credit" and amount:
                        await acct.wallet.credit(amount)
                    elif op == "settle" and open_holds:
                        hold_id, held = next(iter(open_holds.items()))
                        await acct.wallet.settle_hold(hold_id, min(abs(amount), held))
                        del open_holds[hold_id]
                except InsufficientFunds:
                    pass
                w = await acct.wallet.get()
                assert w.available_micros >= 0
                assert w.held_micros == sum(open_holds.values())
                ledger = await mc.store.ledger(acct.account_id)
                assert w.balance_micros == sum(
                    a for k, a, _ in ledger if k in ("credit", "debit", "post")
                )

    trio.run(run)


async def test_wallet_over_http(tenant: Tenant) -> None:
    r = await tenant.http.get("/v1/wallet")
    assert r.status_code == 200
    assert r.json() == {
        "balance": 10.0,
        "available": 10.0,
        "held": 0.0,
        "balanceMicros": 10_000_000,
        "availableMicros": 10_000_000,
        "heldMicros": 0,
        "currency": "USD",
        "holds": [],
    }
