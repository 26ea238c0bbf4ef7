"""Every endpoint is scoped to the caller's account: another account's ids are 404, lists
show only one's own rows. The endpoints come from the route table, so a new endpoint is
covered (or this test fails) without editing it."""

from __future__ import annotations

import pytest

from mailcore.rest import ENDPOINTS
from tests.conftest import Api, Tenant

pytestmark = pytest.mark.anyio

CAMPAIGN = {
    "name": "N",
    "subject": "S",
    "from": {"email": "s@acme.com"},
    "audience": {"tags": ["news"]},
    "content": {"html": "<p>hi</p>"},
}
BODIES = {
    "/v1/mail/contacts/{id}": {"firstName": "Mallory"},
    "/v1/mail/campaigns/{id}": {"name": "stolen"},
    "/v1/mail/webhooks/{id}": {"url": "http://93.184.216.35/stolen"},
}


async def _own_objects(t: Tenant) -> dict[str, str]:
    contact = await t.http.post("/v1/mail/contacts", json={"email": "a@x.com", "tags": ["news"]})
    campaign = await t.http.post("/v1/mail/campaigns", json=CAMPAIGN)
    # A literal public address: accepted without a DNS lookup, never contacted here.
    hook = await t.http.post("/v1/mail/webhooks", json={"url": "http://93.184.216.34/hook"})
    assert contact.status_code == 201 and campaign.status_code == 201, campaign.text
    assert hook.status_code == 201, hook.text
    return {
        "contacts": contact.json()["id"],
        "campaigns": campaign.json()["id"],
        "webhooks": hook.json()["id"],
    }


async def test_other_accounts_ids_are_404_on_every_endpoint(api: Api) -> None:
    alice, mallory = await api.account(), await api.account()
    async with alice.http, mallory.http:
        alice_ids = await _own_objects(alice)
        await _own_objects(mallory)
        with_ids = [e for e in ENDPOINTS if "{id}" in e.path]
        assert with_ids, "the route table has endpoints with ids"
        for e in with_ids:
            resource = e.path.split("/")[3]
            path = e.path.replace("{id}", alice_ids[resource]).replace("{delivery}", "dlv_1")
            body = BODIES.get(e.path)
            r = await mallory.http.request(e.method, path, json=body)
            assert r.status_code == 404, (e.method, e.path, r.text)
            assert r.json()["error"]["code"] == "not_found"
        # Nothing of Alice's changed or went away.
        c = (await alice.http.get(f"/v1/mail/contacts/{alice_ids['contacts']}")).json()
        assert c["firstName"] is None
        m = (await alice.http.get(f"/v1/mail/campaigns/{alice_ids['campaigns']}")).json()
        assert m["name"] == "N"
        w = (await alice.http.get(f"/v1/mail/webhooks/{alice_ids['webhooks']}")).json()
        assert w["url"] == "http://93.184.216.34/hook"


async def test_lists_counts_and_wallets_are_per_account(api: Api) -> None:
    alice, bob = await api.account(credit_micros=1_000_000), await api.account(credit_micros=0)
    async with alice.http, bob.http:
        for i in range(3):
            await alice.http.post(
                "/v1/mail/contacts", json={"email": f"a{i}@x.com", "tags": ["news"]}
            )
        # The same address may exist in two accounts.
        r = await bob.http.post("/v1/mail/contacts", json={"email": "a0@x.com", "tags": ["news"]})
        assert r.status_code == 201
        assert len((await alice.http.get("/v1/mail/contacts")).json()["data"]) == 3
        assert len((await bob.http.get("/v1/mail/contacts")).json()["data"]) == 1
        r = await bob.http.get("/v1/mail/contacts", params={"email": "a1@x.com"})
        assert r.json()["data"] == []
        bob_campaign = (await bob.http.post("/v1/mail/campaigns", json=CAMPAIGN)).json()
        assert bob_campaign["audienceCount"] == 1
        assert (await alice.http.get("/v1/mail/campaigns")).json()["data"] == []
        assert (await alice.http.get("/v1/wallet")).json()["balanceMicros"] == 1_000_000
        assert (await bob.http.get("/v1/wallet")).json()["balanceMicros"] == 0
