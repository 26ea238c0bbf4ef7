"""Pause and resume during a send (no duplicates, nothing lost, a pause really stops the
sending), several relays routed by from-domain, and failover when a relay is down; all
against real SMTP servers on loopback (aiosmtpd)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import msgspec
import pytest
import trio

from mailcore import CampaignCreate, Mailcore, Settings
from mailcore.config import RelayRoute
from mailcore.errors import InvalidState
from tests.peers import aiosmtpd_server, free_port, wait_until

pytestmark = pytest.mark.anyio


def campaign(from_email: str, tag: str = "t") -> CampaignCreate:
    return msgspec.convert(
        {
            "name": "c",
            "subject": "hello {{email}}",
            "from": {"email": from_email},
            "audience": {"tags": [tag]},
            "content": {"html": "<p>hi</p>"},
        },
        CampaignCreate,
    )


@asynccontextmanager
async def sender(settings: Settings) -> AsyncIterator[Mailcore]:
    async with Mailcore.open(settings) as mc, trio.open_nursery() as nursery:
        await nursery.start(mc.run_sender)
        yield mc
        nursery.cancel_scope.cancel()


async def wait_done(mc: Mailcore, account_id: str, campaign_id: str) -> Any:
    scope = mc.account(account_id)
    with trio.fail_after(120):
        while True:
            stats = await scope.campaigns.stats(campaign_id)
            if stats.status in ("sent", "cancelled"):
                return stats
            await trio.sleep(0.05)


async def test_pause_and_resume_fifty_times_sends_each_recipient_once(database_url: str) -> None:
    n = 6_000
    with aiosmtpd_server() as (port, smtp):
        settings = Settings.load(
            env={},
            database_url=database_url,
            smtp_url=f"smtp://127.0.0.1:{port}",
            secret_key="k",
            send_batch_size=100,
            max_in_flight=200,
            smtp_connections=4,
        )
        async with sender(settings) as mc:
            acct = await mc.accounts.create("p", credit_micros=10_000_000)
            scope = mc.account(acct.account_id)
            await scope.contacts.import_rows(
                {"email": f"r{i}@example.com", "tags": ["t"]} for i in range(n)
            )
            c = await scope.campaigns.create(campaign("s@acme.test"))
            await scope.campaigns.send(c.id)
            await wait_until(lambda: len(smtp.messages) >= 200, 30, 0.01)

            # A pause stops the sending: once what was in flight is recorded, nothing more
            # arrives while it stays paused.
            stats = await scope.campaigns.pause(c.id)
            assert stats.status == "paused"

            async def nothing_in_flight() -> bool:
                return not (await mc.store.recipient_counts(c.id)).get("sending")

            await wait_until(nothing_in_flight, 30, 0.02)
            arrived = len(smtp.messages)
            await trio.sleep(0.5)
            assert len(smtp.messages) == arrived
            assert arrived < n
            with pytest.raises(InvalidState):
                await scope.campaigns.pause(c.id)
            assert (await scope.campaigns.resume(c.id)).status == "sending"
            with pytest.raises(InvalidState):
                await scope.campaigns.resume(c.id)

            cycles = 1
            while cycles < 50:
                await trio.sleep(0.01)
                await scope.campaigns.pause(c.id)
                await trio.sleep(0.01)
                await scope.campaigns.resume(c.id)
                cycles += 1
            assert len(smtp.messages) < n, "the send finished before the cycles were done"
            stats = await wait_done(mc, acct.account_id, c.id)

        counts = smtp.count_by_recipient()
        assert stats.status == "sent" and stats.delivered == n
        assert len(counts) == n and max(counts.values()) == 1, "a recipient got two messages"
        assert stats.cost.actual_micros == n * 300


async def test_relays_routed_by_from_domain_with_failover(database_url: str) -> None:
    dead = free_port()  # nothing listens here
    with aiosmtpd_server() as (alpha_port, alpha), aiosmtpd_server() as (other_port, other):
        settings = Settings.load(
            env={},
            database_url=database_url,
            secret_key="k",
            relays=(
                # alpha.test's mail: its own relay (first down, so the second takes it).
                RelayRoute(
                    name="alpha-down", url=f"smtp://127.0.0.1:{dead}", from_domains=("alpha.test",)
                ),
                RelayRoute(
                    name="alpha",
                    url=f"smtp://127.0.0.1:{alpha_port}",
                    from_domains=("alpha.test", "*.alpha.test"),
                ),
                RelayRoute(name="default", url=f"smtp://127.0.0.1:{other_port}"),
            ),
        )
        async with sender(settings) as mc:
            acct = await mc.accounts.create("r", credit_micros=10_000_000)
            scope = mc.account(acct.account_id)
            await scope.contacts.import_rows(
                {"email": f"a{i}@example.com", "tags": ["a"]} for i in range(300)
            )
            await scope.contacts.import_rows(
                {"email": f"b{i}@example.com", "tags": ["b"]} for i in range(200)
            )
            ca = await scope.campaigns.create(campaign("news@mail.alpha.test", "a"))
            cb = await scope.campaigns.create(campaign("news@beta.test", "b"))
            await scope.campaigns.send(ca.id)
            await scope.campaigns.send(cb.id)
            sa = await wait_done(mc, acct.account_id, ca.id)
            sb = await wait_done(mc, acct.account_id, cb.id)

        assert sa.delivered == 300 and sb.delivered == 200
        assert {m.mail_from for m in alpha.messages} == {"news@mail.alpha.test"}
        assert {m.mail_from for m in other.messages} == {"news@beta.test"}
        assert len(alpha.count_by_recipient()) == 300 == len(alpha.messages)
        assert len(other.messages) == 200


async def test_no_matching_relay_keeps_the_campaign_waiting_with_the_reason(
    database_url: str,
) -> None:
    with aiosmtpd_server() as (port, smtp):
        settings = Settings.load(
            env={},
            database_url=database_url,
            secret_key="k",
            relays=(RelayRoute(url=f"smtp://127.0.0.1:{port}", from_domains=("alpha.test",)),),
        )
        async with sender(settings) as mc:
            acct = await mc.accounts.create("n", credit_micros=10_000_000)
            scope = mc.account(acct.account_id)
            await scope.contacts.import_rows({"email": "x@example.com", "tags": ["t"]} for _ in [0])
            c = await scope.campaigns.create(campaign("news@beta.test"))
            await scope.campaigns.send(c.id)
            with trio.fail_after(30):
                while True:
                    send = await mc.store.get_send(acct.account_id, c.id)
                    if send is not None and send.last_error:
                        break
                    await trio.sleep(0.05)
            assert "no relay is configured for the from-domain beta.test" in send.last_error
            stats = await scope.campaigns.stats(c.id)
            assert stats.status == "sending" and stats.delivered == 0
            assert smtp.messages == []


async def test_a_receiving_domains_rate_limit_holds_on_the_wire(database_url: str) -> None:
    from mailcore.config import DomainLimits

    rate, n = 100.0, 400
    with aiosmtpd_server() as (port, smtp):
        settings = Settings.load(
            env={},
            database_url=database_url,
            smtp_url=f"smtp://127.0.0.1:{port}",
            secret_key="k",
            domains={"slow.test": DomainLimits(rate=rate)},
            throttle_max_wait_seconds=0.5,  # beyond that, deferred to the database
            retry_schedule=(1,),
        )
        arrivals: list[float] = []
        async with sender(settings) as mc:
            acct = await mc.accounts.create("rl", credit_micros=10_000_000)
            scope = mc.account(acct.account_id)
            await scope.contacts.import_rows(
                {"email": f"u{i}@{'slow' if i % 2 else 'fast'}.test", "tags": ["t"]}
                for i in range(n)
            )
            c = await scope.campaigns.create(campaign("s@acme.test"))
            await scope.campaigns.send(c.id)
            seen = 0
            while (await scope.campaigns.stats(c.id)).status != "sent":
                await trio.sleep(0.01)
                fresh = smtp.messages[seen:]
                seen += len(fresh)
                arrivals += [trio.current_time()] * sum(
                    1 for m in fresh if m.rcpt_tos[0].endswith("@slow.test")
                )
            stats = await scope.campaigns.stats(c.id)

    assert stats.delivered == n and len(arrivals) == n // 2
    assert max(smtp.count_by_recipient().values()) == 1
    # In any second, at most the rate plus its burst (rate/10) reached the server; the
    # other domain was not held back behind it.
    for i, start in enumerate(arrivals):
        in_window = sum(1 for t in arrivals[i:] if t - start < 1.0)
        assert in_window <= rate * 1.1 + 2, in_window
    assert arrivals[-1] - arrivals[0] >= (n // 2) / rate * 0.8
