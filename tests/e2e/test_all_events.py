"""Issue 4's end-to-end: one campaign through the HTTP API, a real SMTP server and a real
HTTP receiver, and each of the eight event types arriving signed and verifiable, with the
stats matching: opens and clicks by fetching the pixel and links found in delivered
messages, a bounce by the SMTP server refusing a recipient, a later DSN, a complaint
report, and a one-click unsubscribe."""

from __future__ import annotations

import email
import email.policy
import re
from collections import Counter
from pathlib import Path

import httpx
import pytest
import trio
from standardwebhooks import Webhook as Verifier

from mailcore import Mailcore, Settings
from mailcore.rest.server import serve
from tests.e2e.test_feedback import arf, dsn
from tests.peers import WebhookReceiver, aiosmtpd_server, free_port, wait_until

pytestmark = pytest.mark.anyio

HTML = '<html><body><p>Hi {{firstName}}</p><a href="https://acme.example/x">x</a></body></html>'


async def test_eight_event_types_end_to_end(tmp_path: Path, database_url: str) -> None:
    receiver = WebhookReceiver(fail_first=2)
    api_port = free_port()
    with aiosmtpd_server(reject=[("refused@*", "550 5.1.1 no such user")]) as (port, smtp):
        settings = Settings.load(
            env={},
            database_url=database_url,
            smtp_url=f"smtp://127.0.0.1:{port}",
            public_url=f"http://127.0.0.1:{api_port}",
            secret_key="k",
            webhook_allow_private=True,
            webhook_retry_schedule=(0, 0, 0),
        )
        async with Mailcore.open(settings) as mc, trio.open_nursery() as nursery:
            hook_url = (await nursery.start(receiver.serve))[0] + "/hook"
            await nursery.start(mc.run_sender)
            await nursery.start(mc.run_webhooks)
            base = (await nursery.start(serve, mc, "127.0.0.1", api_port))[0]
            acct = await mc.accounts.create("t", credit_micros=1_000_000)
            auth = {"Authorization": f"Bearer {acct.api_key}"}
            async with (
                httpx.AsyncClient(base_url=base, headers=auth, timeout=30) as http,
                httpx.AsyncClient(timeout=10) as reader,
            ):
                hook = (await http.post("/v1/mail/webhooks", json={"url": hook_url})).json()
                people = ["opens", "clicks", "dsn", "complains", "leaves", "quiet", "refused"]
                for name in people:
                    await http.post(
                        "/v1/mail/contacts",
                        json={"email": f"{name}@x.com", "firstName": name.title(), "tags": ["t"]},
                    )
                c = (
                    await http.post(
                        "/v1/mail/campaigns",
                        json={
                            "name": "all",
                            "subject": "Hi {{firstName}}",
                            "from": {"email": "s@acme.com"},
                            "audience": {"tags": ["t"]},
                            "content": {"html": HTML},
                        },
                    )
                ).json()
                await http.post(f"/v1/mail/campaigns/{c['id']}/send")

                async def stats() -> dict[str, int]:
                    r = await http.get(f"/v1/mail/campaigns/{c['id']}/stats")
                    return r.json()  # type: ignore[no-any-return]

                async def sent() -> bool:
                    return (await stats())["status"] == "sent"

                await wait_until(sent)
                got = {m.rcpt_tos[0]: m.content for m in smtp.messages}
                assert set(got) == {f"{n}@x.com" for n in people if n != "refused"}

                def part(rcpt: str) -> tuple[str, str, str]:
                    msg = email.message_from_bytes(got[rcpt], policy=email.policy.default)
                    html = msg.get_body(("html",)).get_content()  # type: ignore[union-attr]
                    return (
                        html,
                        str(msg["Message-ID"]).strip("<>"),
                        str(msg["List-Unsubscribe"]).strip("<>"),
                    )

                html, _, _ = part("opens@x.com")
                assert (
                    await reader.get(re.findall(r'src="([^"]+/o/[^"]+)"', html)[0])
                ).status_code == 200
                html, _, _ = part("clicks@x.com")
                r = await reader.get(re.findall(r'href="([^"]+/c/[^"]+)"', html)[0])
                assert r.headers["location"] == "https://acme.example/x"
                _, mid, _ = part("dsn@x.com")
                inbound = {"Content-Type": "message/rfc822"}
                r = await http.post(
                    "/v1/mail/inbound", content=dsn(mid, "dsn@x.com"), headers=inbound
                )
                assert r.json()["applied"] == 1
                _, mid, _ = part("complains@x.com")
                r = await http.post(
                    "/v1/mail/inbound", content=arf(mid, "complains@x.com"), headers=inbound
                )
                assert r.json()["applied"] == 1
                _, _, unsubscribe = part("leaves@x.com")
                r = await reader.post(
                    unsubscribe,
                    content=b"List-Unsubscribe=One-Click",
                    headers={"Content-Type": "application/x-www-form-urlencoded"},
                )
                assert r.status_code == 200

                expected = Counter(
                    {
                        "campaign.sent": 1,
                        "email.delivered": 6,
                        "email.bounced": 2,
                        "campaign.completed": 1,
                        "email.opened": 1,
                        "email.clicked": 1,
                        "email.complained": 1,
                        "contact.unsubscribed": 1,
                    }
                )
                await wait_until(lambda: len(receiver.requests) >= sum(expected.values()))
                verifier = Verifier(hook["secret"])
                events = [verifier.verify(b, h) for h, b in receiver.requests]
                assert Counter(e["type"] for e in events) == expected
                assert len({e["id"] for e in events}) == len(events)
                assert receiver.calls == len(events) + 2  # two refusals were retried
                bounces = {
                    e["data"]["email"]: e["data"]["bounceType"]
                    for e in events
                    if e["type"] == "email.bounced"
                }
                assert bounces == {"refused@x.com": "hard", "dsn@x.com": "hard"}

                s = await stats()
                assert (s["delivered"], s["bounced"], s["opened"], s["clicked"]) == (6, 1, 1, 1)
                assert (s["complained"], s["unsubscribed"], s["hardBounces"]) == (1, 1, 2)
                assert s["cost"]["actualMicros"] == 6 * 300
            nursery.cancel_scope.cancel()
