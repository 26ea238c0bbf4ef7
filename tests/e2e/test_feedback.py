"""Bounces and complaints after delivery: a DSN and an ARF report through the API, and a
DSN over inbound SMTP to the signed VERP return path. The contact is suppressed from the
next send, the events fire, the stats count them; another account cannot touch them."""

from __future__ import annotations

import email
import email.policy
from pathlib import Path

import httpx
import pytest
import trio

from mailcore import Mailcore, Settings
from mailcore.rest.server import serve
from mailcore.smtp import RelayConfig, SmtpConnection
from tests.peers import WebhookReceiver, aiosmtpd_server, free_port, wait_until

pytestmark = pytest.mark.anyio

CAMPAIGN = {
    "name": "n",
    "subject": "hi",
    "from": {"email": "news@acme.example"},
    "audience": {"tags": ["t"]},
    "content": {"html": "<p>hi</p>"},
    "tracking": {"opens": False, "clicks": False},
}


def dsn(message_id: str, rcpt: str, status: str = "5.1.1") -> bytes:
    action = "failed" if status.startswith("5") else "delayed"
    return (
        "From: MAILER-DAEMON@mx.example\r\nTo: bounces@acme.example\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
        "--B\r\nContent-Type: text/plain\r\n\r\nI'm sorry to have to inform you...\r\n"
        "--B\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.example\r\n\r\n"
        f"Final-Recipient: rfc822; {rcpt}\r\nAction: {action}\r\nStatus: {status}\r\n"
        f"Diagnostic-Code: smtp; 550 {status} user unknown\r\n\r\n"
        "--B\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        f"Message-ID: <{message_id}>\r\nFrom: news@acme.example\r\nTo: {rcpt}\r\n\r\n"
        "--B--\r\n"
    ).encode()


def arf(message_id: str, rcpt: str) -> bytes:
    return (
        "From: fbl@isp.example\r\nTo: abuse@acme.example\r\nSubject: FW: hi\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=feedback-report; boundary="F"\r\n\r\n'
        "--F\r\nContent-Type: text/plain\r\n\r\nThis is an abuse report.\r\n"
        "--F\r\nContent-Type: message/feedback-report\r\n\r\n"
        "Feedback-Type: abuse\r\nUser-Agent: isp-fbl/1.0\r\nVersion: 1\r\n"
        f"Original-Rcpt-To: {rcpt}\r\n\r\n"
        "--F\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        f"Message-ID: <{message_id}>\r\nTo: {rcpt}\r\n\r\n--F--\r\n"
    ).encode()


async def test_dsn_and_arf_after_delivery(tmp_path: Path, database_url: str) -> None:
    receiver = WebhookReceiver()
    inbound_port = free_port()
    with aiosmtpd_server() as (port, smtp):
        settings = Settings.load(
            env={},
            database_url=database_url,
            smtp_url=f"smtp://127.0.0.1:{port}",
            secret_key="k",
            webhook_allow_private=True,
            bounce_domain="bounces.acme.example",
            inbound_smtp_port=inbound_port,
        )
        async with Mailcore.open(settings) as mc, trio.open_nursery() as nursery:
            from mailcore.feedback import run_inbound

            hook_url = (await nursery.start(receiver.serve))[0] + "/hook"
            await nursery.start(mc.run_sender)
            await nursery.start(mc.run_webhooks)
            await nursery.start(run_inbound, mc)
            base = (await nursery.start(serve, mc, "127.0.0.1", 0))[0]
            acct = await mc.accounts.create("t", credit_micros=1_000_000)
            other = await mc.accounts.create("o")
            auth = {"Authorization": f"Bearer {acct.api_key}"}
            async with (
                httpx.AsyncClient(base_url=base, headers=auth, timeout=30) as http,
                httpx.AsyncClient(
                    base_url=base, headers={"Authorization": f"Bearer {other.api_key}"}
                ) as mallory,
            ):
                await http.post(
                    "/v1/mail/webhooks",
                    json={"url": hook_url, "events": ["email.bounced", "email.complained"]},
                )
                for i in range(4):
                    await http.post(
                        "/v1/mail/contacts", json={"email": f"u{i}@x.com", "tags": ["t"]}
                    )
                c = (await http.post("/v1/mail/campaigns", json=CAMPAIGN)).json()
                await http.post(f"/v1/mail/campaigns/{c['id']}/send")

                async def sent() -> bool:
                    r = await http.get(f"/v1/mail/campaigns/{c['id']}/stats")
                    return bool(r.json()["status"] == "sent")

                await wait_until(sent)
                by_rcpt = {m.rcpt_tos[0]: m for m in smtp.messages}
                # The envelope sender is a signed VERP address per recipient.
                assert by_rcpt["u0@x.com"].mail_from.startswith("bounces+")
                assert by_rcpt["u0@x.com"].mail_from != by_rcpt["u1@x.com"].mail_from

                def mid(rcpt: str) -> str:
                    msg = email.message_from_bytes(
                        by_rcpt[rcpt].content, policy=email.policy.default
                    )
                    return str(msg["Message-ID"]).strip("<>")

                headers = {"Content-Type": "message/rfc822"}
                # Another account's key cannot apply reports about this campaign.
                r = await mallory.post(
                    "/v1/mail/inbound", content=dsn(mid("u0@x.com"), "u0@x.com"), headers=headers
                )
                assert r.status_code == 200 and r.json()["applied"] == 0
                r = await http.post(
                    "/v1/mail/inbound", content=dsn(mid("u0@x.com"), "u0@x.com"), headers=headers
                )
                assert r.json() == {"kind": "bounce", "applied": 1, "reports": 1}
                r = await http.post(
                    "/v1/mail/inbound", content=arf(mid("u1@x.com"), "u1@x.com"), headers=headers
                )
                assert r.json() == {"kind": "complaint", "applied": 1, "reports": 1}
                r = await http.post(
                    "/v1/mail/inbound", content=b"Subject: hello\r\n\r\nhi\r\n", headers=headers
                )
                assert r.json()["kind"] == "ignored"

                # A DSN over SMTP to u2's VERP address (no Message-ID needed).
                config = RelayConfig.from_url(f"smtp://127.0.0.1:{inbound_port}?tls=none")
                async with await SmtpConnection.open(config) as conn:
                    out = await conn.send(
                        "", [by_rcpt["u2@x.com"].mail_from], dsn("unknown@elsewhere", "u2@x.com")
                    )
                    assert out.status(by_rcpt["u2@x.com"].mail_from) == "delivered"
                    refused = await conn.send("", ["bounces+forged@bounces.acme.example"], b"x\r\n")
                    assert refused.status("bounces+forged@bounces.acme.example") == "bounced"

                async def status(email_: str) -> str:
                    r = await http.get("/v1/mail/contacts", params={"email": email_})
                    return str(r.json()["data"][0]["status"])

                async def u2_bounced() -> bool:
                    return await status("u2@x.com") == "bounced"

                await wait_until(u2_bounced)
                assert await status("u0@x.com") == "bounced"
                assert await status("u1@x.com") == "complained"
                assert await status("u2@x.com") == "bounced"
                assert await status("u3@x.com") == "subscribed"
                stats = (await http.get(f"/v1/mail/campaigns/{c['id']}/stats")).json()
                assert (stats["hardBounces"], stats["complained"]) == (2, 1)
                assert stats["delivered"] == 4  # counted once, as sent

                await wait_until(lambda: len(receiver.requests) >= 3)
                import json

                kinds = sorted(json.loads(b)["type"] for _, b in receiver.requests)
                assert kinds == ["email.bounced", "email.bounced", "email.complained"]

                # The next campaign leaves them out.
                c2 = (await http.post("/v1/mail/campaigns", json=CAMPAIGN)).json()
                assert c2["audienceCount"] == 1
            nursery.cancel_scope.cancel()
