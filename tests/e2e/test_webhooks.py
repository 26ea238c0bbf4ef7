"""Webhooks end to end: a campaign sent through the HTTP API to a real SMTP server, events
arriving at a real HTTP receiver, signed and verified with the ``standardwebhooks``
package, retried after failures with the same id, never lost."""

from __future__ import annotations

import email
import email.policy
from collections import Counter
from pathlib import Path

import httpx
import pytest
import trio
from standardwebhooks import Webhook as Verifier

from mailcore import Mailcore, Settings
from mailcore.rest.server import serve
from tests.peers import WebhookReceiver, aiosmtpd_server, wait_until

pytestmark = pytest.mark.anyio

CAMPAIGN = {
    "name": "n",
    "subject": "hi {{firstName}}",
    "from": {"email": "s@acme.com"},
    "audience": {"tags": ["t"]},
    "content": {"html": "<p>hi</p>"},
}


async def test_every_event_arrives_signed_and_retried(tmp_path: Path, database_url: str) -> None:
    receiver = WebhookReceiver(fail_first=3)
    with aiosmtpd_server(reject=[("bad@*", "550 5.1.1 no such user")]) as (port, smtp):
        settings = Settings.load(
            env={},
            database_url=database_url,
            smtp_url=f"smtp://127.0.0.1:{port}",
            secret_key="k",
            webhook_allow_private=True,
            webhook_retry_schedule=(0, 0, 0, 0, 0),
        )
        async with Mailcore.open(settings) as mc, trio.open_nursery() as nursery:
            hook_url = (await nursery.start(receiver.serve))[0] + "/hook"
            await nursery.start(mc.run_sender)
            await nursery.start(mc.run_webhooks)
            base = (await nursery.start(serve, mc, "127.0.0.1", 0))[0]
            acct = await mc.accounts.create("t", credit_micros=1_000_000)
            auth = {"Authorization": f"Bearer {acct.api_key}"}
            async with httpx.AsyncClient(base_url=base, headers=auth, timeout=30) as http:
                r = await http.post("/v1/mail/webhooks", json={"url": hook_url})
                assert r.status_code == 201, r.text
                hook = r.json()
                assert hook["id"].startswith("wh_") and hook["secret"].startswith("whsec_")
                assert set(hook["events"]) >= {"email.delivered", "campaign.completed"}
                got = (await http.get(f"/v1/mail/webhooks/{hook['id']}")).json()
                assert got["secret"] is None  # shown once

                emails = [f"u{i}@x.com" for i in range(20)] + ["bad@x.com"]
                for e in emails:
                    await http.post("/v1/mail/contacts", json={"email": e, "tags": ["t"]})
                c = (await http.post("/v1/mail/campaigns", json=CAMPAIGN)).json()
                await http.post(f"/v1/mail/campaigns/{c['id']}/send")

                async def sent() -> bool:
                    stats = await http.get(f"/v1/mail/campaigns/{c['id']}/stats")
                    return bool(stats.json()["status"] == "sent")

                await wait_until(sent)
                # One-click unsubscribe from a delivered message.
                message = next(m for m in smtp.messages if m.rcpt_tos == ["u3@x.com"])
                parsed = email.message_from_bytes(message.content, policy=email.policy.default)
                path = httpx.URL(str(parsed["List-Unsubscribe"]).strip("<>")).path
                assert (await http.post(path)).status_code == 200

                expected = Counter(
                    {
                        "campaign.sent": 1,
                        "email.delivered": 20,
                        "email.bounced": 1,
                        "campaign.completed": 1,
                        "contact.unsubscribed": 1,
                    }
                )
                await wait_until(lambda: len(receiver.requests) >= sum(expected.values()))

                verifier = Verifier(hook["secret"])
                events = []
                for headers, body in receiver.requests:
                    payload = verifier.verify(body, headers)  # raises if the signature is wrong
                    assert headers["webhook-id"] == payload["id"]
                    events.append(payload)
                assert Counter(e["type"] for e in events) == expected
                assert len({e["id"] for e in events}) == len(events)  # once each
                assert receiver.calls == len(events) + 3  # three refusals, retried
                bounced = next(e for e in events if e["type"] == "email.bounced")
                assert bounced["data"]["email"] == "bad@x.com"
                assert bounced["data"]["bounceType"] == "hard"
                assert bounced["data"]["campaignId"] == c["id"]
                assert bounced["data"]["contactId"].startswith("con_")
                done = next(e for e in events if e["type"] == "campaign.completed")
                assert done["data"]["delivered"] == 20 and done["data"]["chargedMicros"] == 6_000
                unsub = next(e for e in events if e["type"] == "contact.unsubscribed")
                assert (
                    unsub["data"]["email"] == "u3@x.com" and unsub["data"]["campaignId"] == c["id"]
                )

                # The delivery log, a test ping, and a replay. The receiver has answered
                # the last request before the dispatcher records it: wait for the record.
                async def recorded() -> bool:
                    log = (await http.get(f"/v1/mail/webhooks/{hook['id']}/deliveries")).json()
                    return {d["state"] for d in log["data"]} == {"succeeded"}

                await wait_until(recorded)
                log = (await http.get(f"/v1/mail/webhooks/{hook['id']}/deliveries")).json()
                assert {d["state"] for d in log["data"]} == {"succeeded"}
                assert len(log["data"]) == len(events)
                assert any(d["attempts"] > 1 for d in log["data"])
                r = await http.post(f"/v1/mail/webhooks/{hook['id']}/test")
                assert r.status_code == 202
                first = log["data"][-1]
                r = await http.post(
                    f"/v1/mail/webhooks/{hook['id']}/deliveries/{first['id']}/replay"
                )
                assert r.status_code == 202
                await wait_until(lambda: len(receiver.requests) >= len(events) + 2)
                extra = [verifier.verify(b, h) for h, b in receiver.requests[len(events) :]]
                assert {e["type"] for e in extra} == {"webhook.test", first["eventType"]}
                replayed = next(e for e in extra if e["type"] != "webhook.test")
                assert replayed["id"] == first["eventId"]  # same id: receivers dedupe
            nursery.cancel_scope.cancel()


async def test_410_disables_the_endpoint(tmp_path: Path, database_url: str) -> None:
    settings = Settings.load(
        env={},
        database_url=database_url,
        secret_key="k",
        webhook_allow_private=True,
    )
    gone = WebhookReceiver()

    async with Mailcore.open(settings) as mc, trio.open_nursery() as nursery:
        from starlette.applications import Starlette
        from starlette.responses import Response
        from starlette.routing import Route

        async def answer_gone(request: object) -> Response:
            gone.calls += 1
            return Response(status_code=410)

        gone.app = lambda: Starlette(routes=[Route("/hook", answer_gone, methods=["POST"])])  # type: ignore[method-assign]
        url = (await nursery.start(gone.serve))[0] + "/hook"
        await nursery.start(mc.run_webhooks)
        acct = mc.account((await mc.accounts.create("t")).account_id)
        from mailcore.models import WebhookCreate

        hook = await acct.webhooks.create(WebhookCreate(url=url))
        await acct.webhooks.send_test(hook.id)

        async def disabled() -> bool:
            return not (await acct.webhooks.get(hook.id)).enabled

        await wait_until(disabled)
        assert "410" in ((await acct.webhooks.get(hook.id)).disabled_reason or "")
        await acct.webhooks.send_test(hook.id)
        await trio.sleep(1.0)
        assert gone.calls == 1  # nothing more is sent to a disabled endpoint
        nursery.cancel_scope.cancel()
