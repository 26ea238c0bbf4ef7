"""The audience index stays in step with the store whatever path wrote: create, PATCH,
upsert, import, delete; and an index in another process (a second Mailcore on the same
database) catches up from the revision counter."""

from __future__ import annotations

import random
from collections.abc import Callable

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
