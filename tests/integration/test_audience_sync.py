"""The audience index stays in step with the store whatever path wrote: create, PATCH,
upsert, import, delete; and an index in another process (a second Mailcore on the same
database) catches up from the revision counter."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailcore import (
    ContactCreate,
    ContactUpdate,
    DuplicateContact,
    Mailcore,
    NotFound,
    Settings,
)

pytestmark = pytest.mark.anyio

TAGS = ["a", "b", "c", "d"]
STATUSES = ["subscribed", "unsubscribed", "bounced", "complained"]


async def brute_force(mc: Mailcore, account_id: str, tags: list[str], exclude: list[str]) -> int:
    page = await mc.account(account_id).contacts.list(limit=1000)
    return sum(
        1
        for c in page.data
        if c.status == "subscribed" and set(c.tags) & set(tags) and not set(c.tags) & set(exclude)
    )


op = st.tuples(
    st.sampled_from(["create", "patch", "upsert", "import", "delete"]),
    st.integers(0, 15),
    st.lists(st.sampled_from(TAGS), max_size=3),
    st.sampled_from(STATUSES),
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=st.lists(op, min_size=1, max_size=30), seed=st.integers(0, 1000))
def test_index_matches_brute_force_after_random_writes(
    new_database_url: Callable[[], str],
    ops: list[tuple[str, int, list[str], str]],
    seed: int,
) -> None:
    import trio

    db = new_database_url()
    rng = random.Random(seed)

    async def run() -> None:
        cfg = Settings.load(env={}, database_url=db)
        async with Mailcore.open(cfg) as mc, Mailcore.open(cfg) as other:
            account_id = (await mc.accounts.create("a")).account_id
            contacts = mc.account(account_id).contacts
            for kind, n, tags, status in ops:
                email = f"u{n}@x.com"
                body = ContactCreate(email=email, tags=tags, status=status)  # type: ignore[arg-type]
                found = (await contacts.list(email=email)).data
                try:
                    if kind == "create":
                        await contacts.create(body)
                    elif kind == "upsert":
                        await contacts.upsert(body)
                    elif kind == "import":
                        await contacts.import_rows([body, {"email": f"v{n}@x.com", "tags": tags}])
                    elif kind == "patch" and found:
                        await contacts.update(found[0].id, ContactUpdate(tags=tags, status=status))  # type: ignore[arg-type]
                    elif kind == "delete" and found:
                        await contacts.delete(found[0].id)
                except (DuplicateContact, NotFound):
                    pass
                if rng.random() < 0.3:  # query between writes sometimes, not always
                    q = rng.sample(TAGS, 2)
                    assert await mc.audiences.count(account_id, q, []) == await brute_force(
                        mc, account_id, q, []
                    )
            for q, ex in ((["a"], []), (["a", "b"], ["c"]), (TAGS, []), (["d"], ["a", "b"])):
                want = await brute_force(mc, account_id, q, ex)
                assert await mc.audiences.count(account_id, q, ex) == want
                # The other process's index catches up from the revision counter.
                assert await other.audiences.count(account_id, q, ex) == want

    trio.run(run)


async def test_first_load_in_chunks_with_interleaved_accounts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fresh index loads an account's rows in chunks of consecutive seqs: chunks of 3 seqs,
    two accounts' contacts interleaved (so chunks hold both, or none of one), then a catch-up."""
    import mailcore.store.sqlite as sqlite_store

    monkeypatch.setattr(sqlite_store, "_CONTACT_CHUNK_SEQS", 3)
    cfg = Settings.load(env={}, database_url=f"sqlite:///{tmp_path}/chunks.db")
    rng = random.Random(5)
    async with Mailcore.open(cfg) as mc:
        accounts = [(await mc.accounts.create(name)).account_id for name in ("a", "b")]
        for i in range(40):
            account = accounts[0] if i % 5 else accounts[1]
            await mc.account(account).contacts.create(
                ContactCreate(
                    email=f"u{i}@x.com",
                    tags=rng.sample(TAGS, rng.randint(0, 3)),
                    status=rng.choice(STATUSES),  # type: ignore[arg-type]
                )
            )
        async with Mailcore.open(cfg) as fresh:
            for account in accounts:
                for q, ex in ((["a"], []), (["a", "b"], ["c"]), (TAGS, []), (["d"], ["a"])):
                    want = await brute_force(mc, account, q, ex)
                    assert await fresh.audiences.count(account, q, ex) == want
            index = await fresh.audiences.current(accounts[0])
            assert len(index) == 32
            # a catch-up after more writes and a delete
            contacts = mc.account(accounts[0]).contacts
            first = (await contacts.list(limit=1)).data[0]
            await contacts.delete(first.id)
            await contacts.create(ContactCreate(email="late@x.com", tags=["a"]))
            assert await fresh.audiences.count(accounts[0], ["a"], []) == await brute_force(
                mc, accounts[0], ["a"], []
            )
            assert len(await fresh.audiences.current(accounts[0])) == 32
