"""A campaign sent end to end through the HTTP API to a real SMTP server on loopback that
no line of ours wrote (aiosmtpd): every recipient gets exactly one message with their own
merge fields, the messages parse, and the wallet is charged exactly delivered × $0.0003."""

from __future__ import annotations

import email
import email.policy
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from mailcore import Mailcore, Settings
from mailcore.rest.server import serve
from tests.peers import RecordingHandler, aiosmtpd_server

pytestmark = pytest.mark.anyio

N = 10_240
BOUNCING = 40  # b{i}@bounce.test are refused with 550 at RCPT


class Stack:
    def __init__(
        self, http: httpx.AsyncClient, mc: Mailcore, smtp: RecordingHandler, account_id: str
    ) -> None:
        self.http, self.mc, self.smtp, self.account_id = http, mc, smtp, account_id

    async def wait_until_done(self, campaign_id: str) -> dict[str, Any]:
        with trio.fail_after(180):
            while True:
                stats = (await self.http.get(f"/v1/mail/campaigns/{campaign_id}/stats")).json()
                if stats["status"] in ("sent", "cancelled"):
                    return stats  # type: ignore[no-any-return]
                await trio.sleep(0.1)


@pytest.fixture
def smtp_server() -> Iterator[tuple[int, RecordingHandler]]:
    with aiosmtpd_server(reject=[("*@bounce.test", "550 5.1.1 no such user")]) as peer:
        yield peer


@pytest.fixture
async def stack(
    tmp_path: Path, database_url: str, smtp_server: tuple[int, RecordingHandler]
) -> AsyncIterator[Stack]:
    port, handler = smtp_server
    settings = Settings.load(
        env={},
        database_url=database_url,
        smtp_url=f"smtp://127.0.0.1:{port}",
        public_url="https://mail.example.test",
        secret_key="k",
        retry_schedule=(1,),
    )
    async with Mailcore.open(settings) as mc, trio.open_nursery() as nursery:
        await nursery.start(mc.run_sender)
        base = (await nursery.start(serve, mc, "127.0.0.1", 0))[0]
        account = await mc.accounts.create("acme", credit_micros=5_000_000)
        async with httpx.AsyncClient(
            base_url=base, headers={"Authorization": f"Bearer {account.api_key}"}, timeout=60
        ) as http:
            yield Stack(http, mc, handler, account.account_id)
        nursery.cancel_scope.cancel()


def contacts_csv() -> bytes:
    rows = ["email,firstName,tags,code"]
    rows += [f"r{i}@example.com,Näme{i},newsletter,C{i:05d}" for i in range(N - BOUNCING)]
    rows += [f"b{i}@bounce.test,B{i},newsletter,X{i}" for i in range(BOUNCING)]
    rows += ["other@example.com,Other,elsewhere,none"]
    return ("\n".join(rows) + "\n").encode()


CAMPAIGN = {
    "name": "March Newsletter",
    "subject": "{{firstName}}, what's new this month",
    "preheader": "Code {{customFields.code}}",
    "from": {"name": "Sarah at Acme", "email": "sarah@acme.com"},
    "audience": {"tags": ["newsletter"]},
    "content": {
        "html": '<html><body><p>Hi {{firstName | default: "there"}}, your code is '
        '<b>{{customFields.code}}</b>.</p><a href="https://acme.com/x?a=1&amp;b=2">more</a>'
        "</body></html>"
    },
}


async def test_campaign_to_10240_recipients_over_real_smtp(stack: Stack) -> None:
    r = await stack.http.post(
        "/v1/mail/contacts/import", content=contacts_csv(), headers={"Content-Type": "text/csv"}
    )
    assert r.json()["created"] == N + 1
    campaign = (await stack.http.post("/v1/mail/campaigns", json=CAMPAIGN)).json()
    assert campaign["audienceCount"] == N and campaign["estimatedCost"] == 3.07

    r = await stack.http.post(f"/v1/mail/campaigns/{campaign['id']}/send")
    assert r.status_code == 200, r.text
    sent = r.json()
    assert sent["status"] == "sending" and sent["audienceCount"] == N
    assert sent["cost"] == {"estimated": 3.07, "currency": "USD", "holdId": sent["cost"]["holdId"]}
    assert sent["cost"]["holdId"].startswith("hold_")
    assert r.headers["x-price"] == "300 micros/recipient"
    wallet = (await stack.http.get("/v1/wallet")).json()
    assert wallet["heldMicros"] == N * 300  # the exact hold, not the rounded estimate

    stats = await stack.wait_until_done(campaign["id"])
    delivered = N - BOUNCING
    assert stats["delivered"] == delivered
    assert stats["bounced"] == BOUNCING
    assert stats["pending"] == stats["deferred"] == stats["failed"] == 0
    assert (
        sum(
            stats[k]
            for k in (
                "delivered",
                "bounced",
                "deferred",
                "failed",
                "suppressed",
                "cancelled",
                "pending",
            )
        )
        == stats["audienceCount"]
        == N
    )
    assert stats["cost"]["actualMicros"] == delivered * 300

    # Exactly one message per recipient, with the recipient's own merge fields.
    counts = stack.smtp.count_by_recipient()
    assert len(counts) == delivered and set(counts.values()) == {1}
    for received in stack.smtp.messages:
        (rcpt,) = received.rcpt_tos
        i = int(rcpt[1:].split("@")[0])
        assert received.mail_from == "sarah@acme.com"
        msg = email.message_from_bytes(received.content, policy=email.policy.default)
        assert msg["Subject"] == f"Näme{i}, what's new this month"
        assert msg["To"].addresses[0].addr_spec == rcpt
        assert msg["From"].addresses[0].display_name == "Sarah at Acme"
        assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert msg["List-Unsubscribe"].startswith("<https://mail.example.test/u/")
        assert rcpt not in msg["List-Unsubscribe"]
        html = msg.get_body(("html",)).get_content()  # type: ignore[union-attr]
        text = msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        assert f"<b>C{i:05d}</b>" in html and f"Code C{i:05d}" in html
        assert f"Hi Näme{i}, your code is C{i:05d}." in text

    # Charged exactly delivered × $0.0003; the rest of the hold released; once.
    wallet = (await stack.http.get("/v1/wallet")).json()
    assert wallet["balanceMicros"] == 5_000_000 - delivered * 300
    assert wallet["heldMicros"] == 0 and wallet["holds"] == []
    ledger = await stack.mc.store.ledger(stack.account_id)
    assert [k for k, _, h in ledger if h == sent["cost"]["holdId"]] == ["hold", "post", "release"]
    got = (await stack.http.get(f"/v1/mail/campaigns/{campaign['id']}")).json()
    assert got["status"] == "sent" and got["audienceCount"] == N
