"""Opens and clicks, by fetching the pixel and the links found in delivered messages:
recorded once per fetch, unique and total in stats, events to the webhook, redirects only
to links of the campaign, forged tokens 404, tracking off per campaign."""

from __future__ import annotations

import email
import email.policy
import re
from pathlib import Path

import httpx
import pytest
import trio
from standardwebhooks import Webhook as Verifier

from mailcore import Mailcore, Settings
from mailcore.rest.server import serve
from tests.peers import WebhookReceiver, aiosmtpd_server, wait_until

pytestmark = pytest.mark.anyio

HTML = (
    '<html><body><p>Hi</p><a href="https://acme.example/pricing?a=1&amp;b=2">pricing</a> '
    '<a href="https://acme.example/blog">blog</a> <a href="mailto:x@acme.example">mail</a>'
    "</body></html>"
)


def html_of(raw: bytes) -> str:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    return msg.get_body(("html",)).get_content()  # type: ignore[union-attr,no-any-return]


async def test_opens_and_clicks_from_delivered_messages(tmp_path: Path, database_url: str) -> None:
    receiver = WebhookReceiver()
    with aiosmtpd_server() as (port, smtp):
        async with trio.open_nursery() as outer:
            hook_url = (await outer.start(receiver.serve))[0] + "/hook"
            # The public URL is the API itself, so the links in the messages work as is.
            api_port = await outer.start(_free_port_holder)
            settings = Settings.load(
                env={},
                database_url=database_url,
                smtp_url=f"smtp://127.0.0.1:{port}",
                public_url=f"http://127.0.0.1:{api_port}",
                secret_key="k",
                webhook_allow_private=True,
            )
            async with Mailcore.open(settings) as mc, trio.open_nursery() as nursery:
                await nursery.start(mc.run_sender)
                await nursery.start(mc.run_webhooks)
                base = (await nursery.start(serve, mc, "127.0.0.1", api_port))[0]
                acct = await mc.accounts.create("t", credit_micros=1_000_000)
                auth = {"Authorization": f"Bearer {acct.api_key}"}
                async with httpx.AsyncClient(base_url=base, headers=auth, timeout=30) as http:
                    hook = (
                        await http.post(
                            "/v1/mail/webhooks",
                            json={"url": hook_url, "events": ["email.opened", "email.clicked"]},
                        )
                    ).json()
                    for i in range(3):
                        await http.post(
                            "/v1/mail/contacts", json={"email": f"u{i}@x.com", "tags": ["t"]}
                        )
                    body = {
                        "name": "n",
                        "subject": "s",
                        "from": {"email": "s@acme.com"},
                        "audience": {"tags": ["t"]},
                        "content": {"html": HTML},
                    }
                    c = (await http.post("/v1/mail/campaigns", json=body)).json()
                    assert c["tracking"] == {"opens": True, "clicks": True}
                    await http.post(f"/v1/mail/campaigns/{c['id']}/send")

                    async def sent() -> bool:
                        r = await http.get(f"/v1/mail/campaigns/{c['id']}/stats")
                        return bool(r.json()["status"] == "sent")

                    await wait_until(sent)
                    pages = {m.rcpt_tos[0]: html_of(m.content) for m in smtp.messages}
                    html0 = pages["u0@x.com"]
                    assert "u0@x.com" not in html0  # no address in any URL
                    assert 'href="mailto:x@acme.example"' in html0  # not tracked
                    clicks = re.findall(r'href="(http://127\.0\.0\.1:\d+/c/[^"]+)"', html0)
                    pixel = re.findall(r'src="(http://127\.0\.0\.1:\d+/o/[^"]+)"', html0)
                    assert len(clicks) == 2 and len(pixel) == 1

                    async with httpx.AsyncClient(timeout=10) as anon:
                        r = await anon.get(pixel[0])
                        assert r.status_code == 200 and r.headers["content-type"] == "image/gif"
                        await anon.get(pixel[0])  # a second open of the same message
                        r = await anon.get(clicks[0])
                        assert r.status_code == 302
                        assert r.headers["location"] == "https://acme.example/pricing?a=1&b=2"
                        # Another recipient opens and clicks the blog link.
                        html1 = pages["u1@x.com"]
                        await anon.get(re.findall(r'src="([^"]+/o/[^"]+)"', html1)[0])
                        r = await anon.get(re.findall(r'href="([^"]+/c/[^"]+)"', html1)[1])
                        assert r.headers["location"] == "https://acme.example/blog"
                        # A link id outside the campaign's table, and forged tokens.
                        assert (await anon.get(clicks[0][:-1] + "9")).status_code == 404
                        forged = clicks[0].replace("/c/", "/c/A")
                        assert (await anon.get(forged)).status_code == 404
                        bad_pixel = await anon.get(pixel[0] + "x")
                        assert bad_pixel.status_code == 200  # a pixel, but nothing recorded

                    stats = (await http.get(f"/v1/mail/campaigns/{c['id']}/stats")).json()
                    assert (stats["opened"], stats["totalOpens"]) == (2, 3)
                    assert (stats["clicked"], stats["totalClicks"]) == (2, 2)

                    await wait_until(lambda: len(receiver.requests) >= 5)
                    verifier = Verifier(hook["secret"])
                    events = [verifier.verify(b, h) for h, b in receiver.requests]
                    types = sorted(e["type"] for e in events)
                    assert types == ["email.clicked"] * 2 + ["email.opened"] * 3
                    urls = {e["data"]["url"] for e in events if e["type"] == "email.clicked"}
                    assert urls == {
                        "https://acme.example/pricing?a=1&b=2",
                        "https://acme.example/blog",
                    }

                    # Tracking off: links untouched, no pixel.
                    body["tracking"] = {"opens": False, "clicks": False}
                    c2 = (await http.post("/v1/mail/campaigns", json=body)).json()
                    before = len(smtp.messages)
                    await http.post(f"/v1/mail/campaigns/{c2['id']}/send")
                    await wait_until(lambda: len(smtp.messages) >= before + 3)
                    plain = html_of(smtp.messages[-1].content)
                    assert 'href="https://acme.example/pricing?a=1&amp;b=2"' in plain
                    assert "/o/" not in plain
                nursery.cancel_scope.cancel()
            outer.cancel_scope.cancel()


async def _free_port_holder(*, task_status: trio.TaskStatus[int]) -> None:
    from tests.peers import free_port

    task_status.started(free_port())
