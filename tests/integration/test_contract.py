"""The seed contract's request/response examples, through the HTTP API."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import Api, Tenant

pytestmark = pytest.mark.anyio

SEED = Path(__file__).resolve().parents[3] / "shared" / "spec" / "seed-api.txt"
ISO_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")

SEED_CONTACT = {
    "email": "sarah@example.com",
    "firstName": "Sarah",
    "lastName": "Chen",
    "tags": ["newsletter", "product-updates"],
    "customFields": {"company": "Acme Corp", "plan": "enterprise"},
}
SEED_CAMPAIGN = {
    "name": "March Newsletter",
    "subject": "What's new this month",
    "preheader": "Product updates, tips, and a surprise",
    "from": {"name": "Sarah at Acme", "email": "sarah@acme.com"},
    "audience": {"tags": ["newsletter"]},
    "content": {"html": "<html>...</html>"},
}


async def test_create_contact_matches_the_seed(tenant: Tenant) -> None:
    r = await tenant.http.post("/v1/mail/contacts", json=SEED_CONTACT)
    assert r.status_code == 201
    body = r.json()
    assert body["id"].startswith("con_")
    assert body["email"] == "sarah@example.com"
    assert body["firstName"] == "Sarah"
    assert body["lastName"] == "Chen"
    assert body["tags"] == ["newsletter", "product-updates"]
    assert body["status"] == "subscribed"
    assert ISO_Z.match(body["createdAt"])
    assert body["customFields"] == {"company": "Acme Corp", "plan": "enterprise"}
    # Read back: the same contact.
    again = await tenant.http.get(f"/v1/mail/contacts/{body['id']}")
    assert again.json() == body


def _csv(n: int, tags: str) -> bytes:
    rows = ["email,firstName,tags"] + [f"u{i}@example.com,U{i},{tags}" for i in range(n)]
    return ("\n".join(rows) + "\n").encode()


async def test_create_campaign_matches_the_seed_10240_recipients_cost_3_07(tenant: Tenant) -> None:
    r = await tenant.http.post(
        "/v1/mail/contacts/import",
        content=_csv(10_240, "newsletter;product-updates"),
        headers={"Content-Type": "text/csv"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["created"] == 10_240
    # Contacts outside the audience do not count: other tags, or not subscribed.
    await tenant.http.post("/v1/mail/contacts", json={"email": "x@other.com", "tags": ["other"]})
    await tenant.http.post(
        "/v1/mail/contacts",
        json={"email": "gone@example.com", "tags": ["newsletter"], "status": "unsubscribed"},
    )
    r = await tenant.http.post("/v1/mail/campaigns", json=SEED_CAMPAIGN)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["id"].startswith("cmp_")
    assert body["name"] == "March Newsletter"
    assert body["status"] == "draft"
    assert body["audienceCount"] == 10_240
    assert body["estimatedCost"] == 3.07
    assert ISO_Z.match(body["createdAt"])
    got = (await tenant.http.get(f"/v1/mail/campaigns/{body['id']}")).json()
    assert got["audienceCount"] == 10_240 and got["estimatedCost"] == 3.07


def _seed_price_table() -> list[tuple[str, str, str]]:
    lines = SEED.read_text().splitlines()
    start = lines.index("Per-Endpoint Pricing")
    end = lines.index("Webhook Events")
    table = []
    body = [line for line in lines[start:end] if line.strip()]
    for i, line in enumerate(body):
        m = re.match(r"^(GET|POST|PATCH|DELETE|PUT) (\S+)$", line)
        if m:
            table.append((m.group(1), m.group(2), body[i + 1]))
    return table


async def test_price_list_has_every_seed_row(api: Api) -> None:
    async with api.anonymous() as http:
        r = await http.get("/v1/pricing")
    assert r.status_code == 200
    listed = {(e["method"], e["path"]): e for e in r.json()["data"]}
    seed = _seed_price_table()
    assert len(seed) == 7
    for method, path, display in seed:
        entry = listed[(method, path)]
        assert entry["display"] == display
        assert entry["free"] is (display == "Free")
