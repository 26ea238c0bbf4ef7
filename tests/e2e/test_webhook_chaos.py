"""Chaos: a receiver that fails at random and a dispatcher killed mid-run. Every event is
acknowledged at least once or marked failed; none is lost or left hanging."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trio

from mailcore import Mailcore, Settings
from mailcore.models import WebhookCreate
from mailcore.webhooks.events import EmailEventData, record
from tests.db import query, scalar
from tests.peers import WebhookReceiver, wait_until

pytestmark = pytest.mark.anyio

N = 400


async def test_random_failures_and_a_killed_dispatcher_lose_nothing(
    tmp_path: Path, database_url: str
) -> None:
    receiver = WebhookReceiver(fail_rate=0.3)
    settings = Settings.load(
        env={},
        database_url=database_url,
        secret_key="k",
        webhook_allow_private=True,
        webhook_retry_schedule=(0, 0, 0, 0, 0, 0),
        webhook_lease_seconds=1.0,
        webhook_concurrency=8,
    )
    async with Mailcore.open(settings) as mc, trio.open_nursery() as nursery:
        url = (await nursery.start(receiver.serve))[0] + "/hook"
        acct = mc.account((await mc.accounts.create("t")).account_id)
        await acct.webhooks.create(WebhookCreate(url=url, events=["email.delivered"]))
        events = [
            record(
                acct.account_id,
                "email.delivered",
                EmailEventData(campaign_id="cmp_x", contact_id=None, email=None, email_id=f"e{i}"),
                "2026-11-29T00:00:00Z",
            )
            for i in range(N)
        ]
        assert await mc.store.emit(events, 0.0) == N

        # The first dispatcher is killed (cancelled mid-flight: what it claimed stays leased).
        with trio.move_on_after(30) as first:
            async with trio.open_nursery() as inner:
                await inner.start(mc.run_webhooks)
                await wait_until(lambda: len(receiver.requests) >= N // 4)
                inner.cancel_scope.cancel()
        assert not first.cancelled_caught
        assert len(receiver.requests) < N

        # A second one picks up everything, including the expired leases.
        await nursery.start(mc.run_webhooks)

        def settled() -> bool:
            open_ = scalar(
                database_url,
                "SELECT count(*) FROM webhook_deliveries WHERE state IN ('pending', 'sending')",
            )
            return int(open_) == 0

        await wait_until(settled, seconds=60)
        states = dict(
            query(
                database_url,
                "SELECT e.id, d.state FROM webhook_deliveries d JOIN events e "
                "ON e.seq = d.event_seq",
            )
        )
        received = {json.loads(body)["id"] for _, body in receiver.requests}
        assert set(states) == {e.id for e in events}
        for event_id, state in states.items():
            assert state in ("succeeded", "failed")
            if state == "succeeded":
                assert event_id in received  # acknowledged at least once
        assert received <= set(states)
        nursery.cancel_scope.cancel()


async def test_a_batching_endpoint_gets_signed_arrays(tmp_path: Path, database_url: str) -> None:
    from standardwebhooks import Webhook as Verifier

    receiver = WebhookReceiver()
    settings = Settings.load(
        env={},
        database_url=database_url,
        secret_key="k",
        webhook_allow_private=True,
    )
    async with Mailcore.open(settings) as mc, trio.open_nursery() as nursery:
        url = (await nursery.start(receiver.serve))[0] + "/hook"
        acct = mc.account((await mc.accounts.create("t")).account_id)
        hook = await acct.webhooks.create(
            WebhookCreate(url=url, events=["email.delivered"], batch_size=50)
        )
        assert hook.batch_size == 50 and hook.secret is not None
        events = [
            record(
                acct.account_id,
                "email.delivered",
                EmailEventData(campaign_id="cmp_x", contact_id=None, email=None, email_id=f"e{i}"),
                "2026-11-29T00:00:00Z",
            )
            for i in range(230)
        ]
        await mc.store.emit(events, 0.0)
        await nursery.start(mc.run_webhooks)
        verifier = Verifier(hook.secret)

        def delivered() -> int:
            return sum(len(json.loads(body)) for _, body in receiver.requests)

        await wait_until(lambda: delivered() >= 230)
        got: list[str] = []
        for headers, body in receiver.requests:
            batch = verifier.verify(body, headers)
            assert isinstance(batch, list) and 1 <= len(batch) <= 50
            got += [e["id"] for e in batch]
        assert sorted(got) == sorted(e.id for e in events)
        assert len(receiver.requests) == 5  # 230 events in requests of at most 50
        nursery.cancel_scope.cancel()


async def test_redirects_are_not_followed_and_long_failures_disable(
    tmp_path: Path, database_url: str
) -> None:
    """A 3xx is a failure (the Location is never fetched, the body never stored); an
    endpoint failing for longer than the limit is disabled."""
    from starlette.applications import Starlette
    from starlette.responses import RedirectResponse
    from starlette.routing import Route

    hits: list[str] = []

    async def redirect(request: object) -> RedirectResponse:
        hits.append("hook")
        return RedirectResponse("/elsewhere", status_code=302)

    async def elsewhere(request: object) -> RedirectResponse:
        hits.append("elsewhere")
        return RedirectResponse("/", status_code=200)

    receiver = WebhookReceiver()
    receiver.app = lambda: Starlette(  # type: ignore[method-assign]
        routes=[
            Route("/hook", redirect, methods=["POST"]),
            Route("/elsewhere", elsewhere, methods=["GET", "POST"]),
        ]
    )
    settings = Settings.load(
        env={},
        database_url=database_url,
        secret_key="k",
        webhook_allow_private=True,
        webhook_retry_schedule=(1, 1, 1),
        webhook_disable_after_seconds=0.5,
    )
    async with Mailcore.open(settings) as mc, trio.open_nursery() as nursery:
        url = (await nursery.start(receiver.serve))[0] + "/hook"
        acct = mc.account((await mc.accounts.create("t")).account_id)
        hook = await acct.webhooks.create(WebhookCreate(url=url))
        await nursery.start(mc.run_webhooks)
        await acct.webhooks.send_test(hook.id)

        async def disabled() -> bool:
            return not (await acct.webhooks.get(hook.id)).enabled

        await wait_until(disabled, seconds=30)
        assert hits and set(hits) == {"hook"}  # never followed
        got = await acct.webhooks.get(hook.id)
        assert got.disabled_reason == "failing for too long"
        log = await acct.webhooks.deliveries(hook.id)
        assert log.data[0].last_status == 302
        assert "elsewhere" not in (log.data[0].last_error or "")
        nursery.cancel_scope.cancel()
