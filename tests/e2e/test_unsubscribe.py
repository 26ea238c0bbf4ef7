"""The List-Unsubscribe link of a delivered message: a GET only shows a page (link scanners
fetch URLs), a POST (RFC 8058 one-click) unsubscribes, a forged or altered token is 404,
and the contact is suppressed from the next send."""

from __future__ import annotations

import email
import email.policy
from pathlib import Path

import httpx
import pytest
import trio

from mailcore import Mailcore, Settings
from mailcore.rest.server import serve
from tests.peers import aiosmtpd_server

pytestmark = pytest.mark.anyio

CAMPAIGN = {
    "name": "n",
    "subject": "hi",
    "from": {"email": "s@acme.com"},
    "audience": {"tags": ["t"]},
    "content": {"html": "<p>hi</p>"},
}


async def wait_sent(http: httpx.AsyncClient, cid: str) -> dict[str, int]:
    with trio.fail_after(30):
        while True:
            stats = (await http.get(f"/v1/mail/campaigns/{cid}/stats")).json()
            if stats["status"] == "sent":
                return stats  # type: ignore[no-any-return]
            await trio.sleep(0.05)


async def test_one_click_unsubscribe_from_a_delivered_message(
    tmp_path: Path, database_url: str
) -> None:
    with aiosmtpd_server() as (port, smtp):
        settings = Settings.load(
            env={},
            database_url=database_url,
            smtp_url=f"smtp://127.0.0.1:{port}",
            secret_key="k",
        )
        async with Mailcore.open(settings) as mc, trio.open_nursery() as nursery:
            await nursery.start(mc.run_sender)
            base = (await nursery.start(serve, mc, "127.0.0.1", 0))[0]
            acct = await mc.accounts.create("t", credit_micros=1_000_000)
            auth = {"Authorization": f"Bearer {acct.api_key}"}
            async with httpx.AsyncClient(base_url=base, headers=auth, timeout=30) as http:
                for i in range(3):
                    await http.post(
                        "/v1/mail/contacts", json={"email": f"u{i}@x.com", "tags": ["t"]}
                    )
                c = (await http.post("/v1/mail/campaigns", json=CAMPAIGN)).json()
                await http.post(f"/v1/mail/campaigns/{c['id']}/send")
                await wait_sent(http, c["id"])
                message = next(m for m in smtp.messages if m.rcpt_tos == ["u1@x.com"])
                parsed = email.message_from_bytes(message.content, policy=email.policy.default)
                url = str(parsed["List-Unsubscribe"]).strip("<>")
                path = httpx.URL(url).path  # the public URL's host is not this test server

                page = await http.get(path)
                assert page.status_code == 200 and "<form" in page.text
                contact = (await http.get("/v1/mail/contacts", params={"email": "u1@x.com"})).json()
                assert contact["data"][0]["status"] == "subscribed"  # a GET changes nothing

                tampered = path[:-2] + ("AA" if not path.endswith("AA") else "BB")
                assert (await http.post(tampered)).status_code == 404
                assert (await http.post("/u/not-a-token")).status_code == 404

                r = await http.post(
                    path,
                    content=b"List-Unsubscribe=One-Click",
                    headers={"Content-Type": "application/x-www-form-urlencoded"},
                )
                assert r.status_code == 200
                contact = (await http.get("/v1/mail/contacts", params={"email": "u1@x.com"})).json()
                assert contact["data"][0]["status"] == "unsubscribed"
                assert (await http.post(path)).status_code == 200  # again: still fine

                # The next campaign leaves the unsubscribed contact out.
                c2 = (await http.post("/v1/mail/campaigns", json=CAMPAIGN)).json()
                assert c2["audienceCount"] == 2
                sent = (await http.post(f"/v1/mail/campaigns/{c2['id']}/send")).json()
                assert sent["audienceCount"] == 2
                await wait_sent(http, c2["id"])
                assert smtp.count_by_recipient()["u1@x.com"] == 1
            nursery.cancel_scope.cancel()


async def test_contact_unsubscribed_after_the_plan_is_suppressed(
    tmp_path: Path, database_url: str
) -> None:
    """Unsubscribed between send and delivery: recorded as suppressed, never sent, not
    charged."""
    settings = Settings.load(
        env={},
        database_url=database_url,
        smtp_url="smtp://127.0.0.1:9",
        secret_key="k",
    )
    async with Mailcore.open(settings) as mc:
        acct = mc.account((await mc.accounts.create("t", credit_micros=1_000_000)).account_id)
        await acct.contacts.import_rows(
            [{"email": "a@x.com", "tags": ["t"]}, {"email": "b@x.com", "tags": ["t"]}]
        )
        import msgspec

        from mailcore import CampaignCreate, ContactUpdate

        c = await acct.campaigns.create(msgspec.convert(CAMPAIGN, CampaignCreate))
        await acct.campaigns.send(c.id)  # no sender running: the plan waits
        b = (await acct.contacts.list(email="b@x.com")).data[0]
        await acct.contacts.update(b.id, ContactUpdate(status="unsubscribed"))
        with aiosmtpd_server() as (port, smtp):
            relayed = msgspec.structs.replace(settings, smtp_url=f"smtp://127.0.0.1:{port}")
            async with Mailcore.open(relayed) as mc2, trio.open_nursery() as nursery:
                await nursery.start(mc2.run_sender)
                scope = mc2.account(acct.account_id)
                with trio.fail_after(30):
                    while True:
                        stats = await scope.campaigns.stats(c.id)
                        if stats.status == "sent":
                            break
                        await trio.sleep(0.05)
                nursery.cancel_scope.cancel()
            assert (stats.delivered, stats.suppressed) == (1, 1)
            assert stats.cost.actual_micros == 300
            assert [m.rcpt_tos for m in smtp.messages] == [["a@x.com"]]
