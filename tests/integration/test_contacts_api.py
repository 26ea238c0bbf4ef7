"""Contacts over HTTP: create, read, update, delete, upsert, filters, pagination, import."""

from __future__ import annotations

import json
import random

import pytest

from tests.conftest import Tenant

pytestmark = pytest.mark.anyio


async def test_email_is_normalised_and_unique_case_insensitively(tenant: Tenant) -> None:
    r = await tenant.http.post("/v1/mail/contacts", json={"email": "  Sarah@Example.COM "})
    assert r.status_code == 201
    assert r.json()["email"] == "sarah@example.com"
    first_id = r.json()["id"]
    r = await tenant.http.post("/v1/mail/contacts", json={"email": "SARAH@example.com"})
    assert r.status_code == 409
    err = r.json()["error"]
    assert err["code"] == "duplicate_contact"
    assert err["existingId"] == first_id


async def test_patch_replaces_tags_merges_fields_and_can_change_email(tenant: Tenant) -> None:
    c = (
        await tenant.http.post(
            "/v1/mail/contacts",
            json={"email": "a@x.com", "tags": ["a", "b"], "customFields": {"k": "v", "n": 1}},
        )
    ).json()
    await tenant.http.post("/v1/mail/contacts", json={"email": "taken@x.com"})
    r = await tenant.http.patch(
        f"/v1/mail/contacts/{c['id']}",
        json={"tags": ["c"], "customFields": {"n": None, "m": True}, "lastName": "Li"},
    )
    assert r.status_code == 200
    body = r.json()
    assert body["tags"] == ["c"]
    assert body["customFields"] == {"k": "v", "m": True}
    assert body["lastName"] == "Li"
    assert body["createdAt"] == c["createdAt"]
    r = await tenant.http.patch(f"/v1/mail/contacts/{c['id']}", json={"email": "TAKEN@x.com"})
    assert r.status_code == 409
    r = await tenant.http.patch(f"/v1/mail/contacts/{c['id']}", json={"email": "new@x.com"})
    assert r.json()["email"] == "new@x.com"


async def test_delete_then_get_is_404(tenant: Tenant) -> None:
    c = (await tenant.http.post("/v1/mail/contacts", json={"email": "a@x.com"})).json()
    r = await tenant.http.delete(f"/v1/mail/contacts/{c['id']}")
    assert r.status_code == 200 and r.json() == {"id": c["id"], "deleted": True}
    assert (await tenant.http.get(f"/v1/mail/contacts/{c['id']}")).status_code == 404
    assert (await tenant.http.delete(f"/v1/mail/contacts/{c['id']}")).status_code == 404
    # The address is free again.
    assert (
        await tenant.http.post("/v1/mail/contacts", json={"email": "a@x.com"})
    ).status_code == 201


async def test_upsert_creates_then_updates_and_never_resubscribes(tenant: Tenant) -> None:
    r = await tenant.http.post(
        "/v1/mail/contacts/upsert",
        json={"email": "a@x.com", "firstName": "A", "tags": ["t1"], "customFields": {"k": "1"}},
    )
    assert r.status_code == 201 and r.json()["created"] is True
    cid = r.json()["contact"]["id"]
    r = await tenant.http.post(
        "/v1/mail/contacts/upsert",
        json={
            "email": "A@x.com",
            "tags": ["t2"],
            "customFields": {"j": "2"},
            "status": "unsubscribed",
        },
    )
    assert r.status_code == 200 and r.json()["created"] is False
    c = r.json()["contact"]
    assert c["id"] == cid
    assert c["firstName"] == "A"  # not given: kept
    assert c["tags"] == ["t1", "t2"]  # added
    assert c["customFields"] == {"k": "1", "j": "2"}  # merged
    assert c["status"] == "unsubscribed"
    r = await tenant.http.post(
        "/v1/mail/contacts/upsert", json={"email": "a@x.com", "status": "subscribed"}
    )
    assert r.json()["contact"]["status"] == "unsubscribed"
    # An explicit PATCH is how a contact is re-subscribed.
    r = await tenant.http.patch(f"/v1/mail/contacts/{cid}", json={"status": "subscribed"})
    assert r.json()["status"] == "subscribed"


async def test_filters_by_tag_status_and_email(tenant: Tenant) -> None:
    for i in range(30):
        await tenant.http.post(
            "/v1/mail/contacts",
            json={
                "email": f"u{i}@x.com",
                "tags": ["even"] if i % 2 == 0 else ["odd"],
                "status": "unsubscribed" if i % 3 == 0 else "subscribed",
            },
        )

    async def emails(**params: str) -> set[str]:
        r = await tenant.http.get("/v1/mail/contacts", params={"limit": "1000", **params})
        return {c["email"] for c in r.json()["data"]}

    assert await emails(tag="even") == {f"u{i}@x.com" for i in range(0, 30, 2)}
    assert await emails(status="unsubscribed") == {f"u{i}@x.com" for i in range(0, 30, 3)}
    assert await emails(tag="odd", status="unsubscribed") == {
        f"u{i}@x.com" for i in range(30) if i % 2 and i % 3 == 0
    }
    assert await emails(email="U7@X.com") == {"u7@x.com"}
    assert await emails(tag="none") == set()


async def test_pagination_over_10000_contacts_has_no_gaps_or_repeats(tenant: Tenant) -> None:
    csv = "email,tags\n" + "".join(f"p{i}@x.com,t\n" for i in range(10_000))
    r = await tenant.http.post(
        "/v1/mail/contacts/import", content=csv, headers={"Content-Type": "text/csv"}
    )
    assert r.json()["created"] == 10_000
    rng = random.Random(3)
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    deleted: set[str] = set()
    while True:
        params = {"limit": str(rng.choice([1, 7, 100, 999, 1000]))}
        if cursor:
            params["after"] = cursor
        page = (await tenant.http.get("/v1/mail/contacts", params=params)).json()
        seen += [c["email"] for c in page["data"]]
        pages += 1
        if pages == 5:
            # Deleting the row a cursor points at does not break the next page.
            last = page["data"][-1]
            await tenant.http.delete(f"/v1/mail/contacts/{last['id']}")
            deleted.add(last["email"])
        if not page["hasMore"]:
            assert page["nextCursor"] is None
            break
        cursor = page["nextCursor"]
        assert pages < 10_000
    assert len(seen) == len(set(seen)) == 10_000
    assert set(seen) == {f"p{i}@x.com" for i in range(10_000)}


async def test_json_import_mixed_rows_keeps_the_good_ones(tenant: Tenant) -> None:
    await tenant.http.post("/v1/mail/contacts", json={"email": "old@x.com", "firstName": "Old"})
    rows = [
        {"email": "a@x.com", "firstName": "A", "tags": ["x"]},
        {"email": "bad"},
        {"email": "old@x.com", "lastName": "Timer"},
        {"email": 42},
        {"firstName": "no email"},
        {"email": "b@x.com", "tags": ["a,b"]},
        {"email": "c@x.com", "customFields": {"plan": "pro", "seats": 3}},
        "not an object",
        {"email": "a@x.com", "tags": ["y"]},
    ]
    r = await tenant.http.post("/v1/mail/contacts/import", json={"contacts": rows})
    assert r.status_code == 200, r.text
    result = r.json()
    assert result["total"] == 9
    assert result["created"] == 2  # a (twice in the file: merged), c
    assert result["updated"] == 1  # old
    assert [e["row"] for e in result["errors"]] == [2, 4, 5, 6, 8]
    assert {e["code"] for e in result["errors"]} == {"validation_error"}
    assert result["errors"][0]["email"] == "bad"
    a = (await tenant.http.get("/v1/mail/contacts", params={"email": "a@x.com"})).json()["data"][0]
    assert a["tags"] == ["x", "y"]
    old = (await tenant.http.get("/v1/mail/contacts", params={"email": "old@x.com"})).json()[
        "data"
    ][0]
    assert (old["firstName"], old["lastName"]) == ("Old", "Timer")
    c = (await tenant.http.get("/v1/mail/contacts", params={"email": "c@x.com"})).json()["data"][0]
    assert c["customFields"] == {"plan": "pro", "seats": 3}


async def test_csv_import_tags_custom_columns_and_bad_rows(tenant: Tenant) -> None:
    csv = (
        "\ufeffEmail,First Name,last_name,Tags,company,Status\r\n"
        "a@x.com,Ann,Lee,news; beta ;,Acme,\r\n"
        "broken,B,,news,,\r\n"
        "b@x.com,Bo,,news,,unsubscribed\r\n"
        "c@x.com,too,many,cells,here,,,\r\n"
        '"d@x.com","Dee, Jr.",,news,"Multi\nLine Co",\r\n'
        "e@x.com,,,news,,vip\r\n"
    )
    r = await tenant.http.post(
        "/v1/mail/contacts/import",
        content=csv.encode(),
        headers={"Content-Type": "text/csv; charset=utf-8"},
    )
    assert r.status_code == 200, r.text
    result = r.json()
    assert (result["total"], result["created"], result["updated"]) == (6, 3, 0)
    assert [(e["row"], e.get("field")) for e in result["errors"]] == [
        (2, "email"),
        (4, "row"),
        (6, "status"),
    ]
    a = (await tenant.http.get("/v1/mail/contacts", params={"email": "a@x.com"})).json()["data"][0]
    assert a["firstName"] == "Ann" and a["lastName"] == "Lee"
    assert a["tags"] == ["news", "beta"]
    assert a["customFields"] == {"company": "Acme"}
    b = (await tenant.http.get("/v1/mail/contacts", params={"email": "b@x.com"})).json()["data"][0]
    assert b["status"] == "unsubscribed" and b["customFields"] == {}
    d = (await tenant.http.get("/v1/mail/contacts", params={"email": "d@x.com"})).json()["data"][0]
    assert d["firstName"] == "Dee, Jr." and d["customFields"] == {"company": "Multi\nLine Co"}


@pytest.mark.parametrize(
    ("csv", "field"),
    [
        ("", "body"),
        ("firstName,tags\nA,x\n", "header"),
        ("email,bad column!\na@x.com,1\n", "header"),
        ("email,email\na@x.com,b@x.com\n", "header"),
    ],
)
async def test_csv_with_a_bad_header_is_refused_whole(tenant: Tenant, csv: str, field: str) -> None:
    r = await tenant.http.post(
        "/v1/mail/contacts/import", content=csv.encode(), headers={"Content-Type": "text/csv"}
    )
    assert r.status_code == 400
    assert r.json()["error"]["field"] == field
    assert (await tenant.http.get("/v1/mail/contacts")).json()["data"] == []


async def test_non_utf8_csv_and_bad_json_import_are_400(tenant: Tenant) -> None:
    r = await tenant.http.post(
        "/v1/mail/contacts/import",
        content=b"email\n\xff@x.com\n",
        headers={"Content-Type": "text/csv"},
    )
    assert r.status_code == 400
    for body in (b"{", b"[]", json.dumps({"contacts": {}}).encode(), b'{"contacts": [], "x": 1}'):
        r = await tenant.http.post(
            "/v1/mail/contacts/import", content=body, headers={"Content-Type": "application/json"}
        )
        assert r.status_code == 400, body
