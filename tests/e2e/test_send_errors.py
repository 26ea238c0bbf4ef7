"""Sending with bad input or a bad relay: clear errors, nothing lost, nothing half-done."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import msgspec
import pytest
import trio

from mailcore import Mailcore, Settings
from mailcore.rest.server import serve
from tests.db import query
from tests.peers import aiosmtpd_server, free_port

pytestmark = pytest.mark.anyio

CAMPAIGN = {
    "name": "n",
    "subject": "hi {{firstName}}",
    "from": {"email": "s@acme.com"},
    "audience": {"tags": ["t"]},
    "content": {"html": "<p>hi</p>"},
}


class Api:
    def __init__(self, mc: Mailcore, base: str) -> None:
        self.mc, self.base = mc, base

    @asynccontextmanager
    async def tenant(self, credit_micros: int, contacts: int) -> AsyncIterator[httpx.AsyncClient]:
        acct = await self.mc.accounts.create("t", credit_micros=credit_micros)
        async with httpx.AsyncClient(
            base_url=self.base, headers={"Authorization": f"Bearer {acct.api_key}"}, timeout=30
        ) as http:
            csv = "email,tags\n" + "".join(f"u{i}@example.com,t\n" for i in range(contacts))
            r = await http.post(
                "/v1/mail/contacts/import", content=csv, headers={"Content-Type": "text/csv"}
            )
            assert r.json()["created"] == contacts
            yield http


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[Api]:
    async with Mailcore.open(settings) as mc, trio.open_nursery() as nursery:
        await nursery.start(mc.run_sender)
        base = (await nursery.start(serve, mc, "127.0.0.1", 0))[0]
        yield Api(mc, base)
        nursery.cancel_scope.cancel()


def make_settings(database_url: str, smtp_port: int) -> Settings:
    return Settings.load(
        env={},
        database_url=database_url,
        smtp_url=f"smtp://127.0.0.1:{smtp_port}",
        secret_key="k",
        retry_schedule=(1, 1),
    )


async def send_until_sent(http: httpx.AsyncClient) -> tuple[str, dict[str, Any]]:
    """A campaign created and sent: its id, and its stats once it is sent."""
    c = (await http.post("/v1/mail/campaigns", json=CAMPAIGN)).json()
    await http.post(f"/v1/mail/campaigns/{c['id']}/send")
    return c["id"], await wait_status(http, c["id"], "sent")


async def wait_status(http: httpx.AsyncClient, cid: str, status: str) -> dict[str, Any]:
    with trio.fail_after(60):
        while True:
            stats = (await http.get(f"/v1/mail/campaigns/{cid}/stats")).json()
            if stats["status"] == status:
                return stats  # type: ignore[no-any-return]
            await trio.sleep(0.05)


async def test_no_funds_is_402_and_the_campaign_stays_a_draft(database_url: str) -> None:
    with aiosmtpd_server() as (port, smtp):
        async with (
            running(make_settings(database_url, port)) as api,
            api.tenant(credit_micros=299 * 10, contacts=10) as http,
        ):
            c = (await http.post("/v1/mail/campaigns", json=CAMPAIGN)).json()
            r = await http.post(f"/v1/mail/campaigns/{c['id']}/send")
            assert r.status_code == 402
            assert r.json()["error"]["code"] == "insufficient_funds"
            got = (await http.get(f"/v1/mail/campaigns/{c['id']}")).json()
            assert got["status"] == "draft"
            w = (await http.get("/v1/wallet")).json()
            assert w["heldMicros"] == 0 and w["holds"] == []
            await trio.sleep(0.3)
            assert smtp.messages == []


async def test_send_twice_is_409_and_idempotency_key_replays(database_url: str) -> None:
    with aiosmtpd_server() as (port, smtp):
        async with (
            running(make_settings(database_url, port)) as api,
            api.tenant(credit_micros=1_000_000, contacts=20) as http,
        ):
            c = (await http.post("/v1/mail/campaigns", json=CAMPAIGN)).json()
            other = (await http.post("/v1/mail/campaigns", json=CAMPAIGN)).json()
            key = {"Idempotency-Key": "send-1"}
            first = await http.post(f"/v1/mail/campaigns/{c['id']}/send", headers=key)
            assert first.status_code == 200
            again = await http.post(f"/v1/mail/campaigns/{c['id']}/send", headers=key)
            assert again.status_code == 200, again.text
            assert again.json() == first.json()
            assert again.headers["idempotent-replayed"] == "true"
            r = await http.post(f"/v1/mail/campaigns/{other['id']}/send", headers=key)
            assert r.status_code == 422
            assert r.json()["error"]["code"] == "idempotency_key_reused"
            r = await http.post(f"/v1/mail/campaigns/{c['id']}/send")
            assert r.status_code == 409 and r.json()["error"]["code"] == "invalid_state"
            await wait_status(http, c["id"], "sent")
            r = await http.post(f"/v1/mail/campaigns/{c['id']}/send")
            assert r.status_code == 409
            r = await http.patch(f"/v1/mail/campaigns/{c['id']}", json={"name": "x"})
            assert r.status_code == 409
            assert (await http.delete(f"/v1/mail/campaigns/{c['id']}")).status_code == 409
            # One hold: the replay placed no second one.
            w = (await http.get("/v1/wallet")).json()
            assert w["balanceMicros"] == 1_000_000 - 20 * 300
            assert len(smtp.messages) == 20


async def test_relay_down_keeps_the_campaign_resumable_and_says_why(database_url: str) -> None:
    port = free_port()  # nothing listens here yet
    async with (
        running(make_settings(database_url, port)) as api,
        api.tenant(credit_micros=1_000_000, contacts=30) as http,
    ):
        c = (await http.post("/v1/mail/campaigns", json=CAMPAIGN)).json()
        assert (await http.post(f"/v1/mail/campaigns/{c['id']}/send")).status_code == 200
        with trio.fail_after(20):
            while True:
                stats = (await http.get(f"/v1/mail/campaigns/{c['id']}/stats")).json()
                if stats["lastError"]:
                    break
                await trio.sleep(0.05)
        assert stats["status"] == "sending"
        assert "unavailable" in stats["lastError"]
        assert stats["pending"] == 30 and stats["failed"] == 0
        with aiosmtpd_server(port=port) as (_, smtp):
            stats = await wait_status(http, c["id"], "sent")
            assert stats["delivered"] == 30 and stats["lastError"] is None
            assert len(smtp.messages) == 30


async def test_relay_rejecting_everything_bounces_all_and_charges_nothing(
    database_url: str,
) -> None:
    with aiosmtpd_server(reject=[("*", "550 5.7.1 relaying denied")]) as (port, smtp):
        async with (
            running(make_settings(database_url, port)) as api,
            api.tenant(credit_micros=1_000_000, contacts=25) as http,
        ):
            _, stats = await send_until_sent(http)
            assert stats["bounced"] == 25 and stats["delivered"] == 0
            assert stats["cost"]["actualMicros"] == 0
            w = (await http.get("/v1/wallet")).json()
            assert w["balanceMicros"] == 1_000_000 and w["heldMicros"] == 0
            assert smtp.messages == []


async def test_4xx_is_retried_then_fails_and_is_not_charged(database_url: str) -> None:
    with aiosmtpd_server(reject=[("u1@*", "451 4.3.0 try later")]) as (port, _smtp):
        async with (
            running(make_settings(database_url, port)) as api,
            api.tenant(credit_micros=1_000_000, contacts=3) as http,
        ):
            _, stats = await send_until_sent(http)
            # Tried three times (first + the two retries of the schedule), then failed.
            assert (stats["delivered"], stats["failed"]) == (2, 1)
            assert stats["cost"]["actualMicros"] == 600


async def test_a_deferred_recipient_fails_once_older_than_the_retry_age_limit(
    database_url: str,
) -> None:
    with aiosmtpd_server(reject=[("u1@*", "451 4.2.1 mailbox busy")]) as (port, _smtp):
        settings = msgspec.structs.replace(
            make_settings(database_url, port), retry_schedule=(1,) * 20, retry_max_age_seconds=2.5
        )
        async with running(settings) as api, api.tenant(1_000_000, contacts=3) as http:
            cid, stats = await send_until_sent(http)
            assert (stats["delivered"], stats["failed"]) == (2, 1)
            rows = await api.mc.store.recipient_counts(cid)
            assert rows == {"delivered": 2, "failed": 1}
            # Failed on age (about three tries a second apart), long before 20 retries.
            attempts = [
                r
                for r in query(
                    database_url,
                    "SELECT attempts, state FROM recipients WHERE campaign_id = ?",
                    (cid,),
                )
                if r[1] == "failed"  # (attempts, state)
            ]
            assert attempts and 2 <= attempts[0][0] <= 4


async def test_cancel_stops_sending_and_charges_what_was_delivered(database_url: str) -> None:
    port = free_port()
    async with (
        running(make_settings(database_url, port)) as api,
        api.tenant(credit_micros=1_000_000, contacts=50) as http,
    ):
        c = (await http.post("/v1/mail/campaigns", json=CAMPAIGN)).json()
        await http.post(f"/v1/mail/campaigns/{c['id']}/send")
        r = await http.post(f"/v1/mail/campaigns/{c['id']}/cancel")
        assert r.status_code == 200
        stats = await wait_status(http, c["id"], "cancelled")
        assert stats["delivered"] == 0 and stats["cancelled"] == 50
        w = (await http.get("/v1/wallet")).json()
        assert (w["balanceMicros"], w["heldMicros"]) == (1_000_000, 0)
        r = await http.post(f"/v1/mail/campaigns/{c['id']}/cancel")
        assert r.status_code == 409


async def test_a_reply_holding_a_nul_byte_is_recorded_and_the_send_finishes(
    database_url: str,
) -> None:
    """A server's reply text is recorded as the server sent it, but for NUL, which neither
    PostgreSQL's text nor SQLite's JSON functions keep: it becomes U+FFFD. (On PostgreSQL
    the whole group of results used to fail, so the send never finished.)"""
    reject = [("u3@example.com", "550 5.1.1 no\x00such user")]
    with aiosmtpd_server(reject=reject) as (port, smtp):
        async with (
            running(make_settings(database_url, port)) as api,
            api.tenant(credit_micros=1_000_000, contacts=5) as http,
        ):
            _, stats = await send_until_sent(http)
            assert stats["bounced"] == 1 and stats["delivered"] == 4
            assert len(smtp.messages) == 4
    replies = query(database_url, "SELECT reply FROM recipients WHERE state = 'bounced'", ())
    assert replies == [("550 5.1.1 no\ufffdsuch user",)]
