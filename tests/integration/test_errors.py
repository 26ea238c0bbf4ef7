"""Bad input gets a JSON error with a stable code and the right status, and writes nothing."""

from __future__ import annotations

import httpx
import pytest

from mailcore import Mailcore, Settings
from mailcore.rest.server import serve
from tests.conftest import Api, Tenant

pytestmark = pytest.mark.anyio


async def _count(tenant: Tenant) -> int:
    r = await tenant.http.get("/v1/mail/contacts", params={"limit": 1000})
    return len(r.json()["data"])


@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        (b"{", "invalid_json", None),
        (b"", "invalid_json", None),
        (b'{"email": "a@b.com",}', "invalid_json", None),
        (b"[]", "validation_error", None),
        (b'{"email": 5}', "validation_error", "email"),
        (b'{"firstName": "x"}', "validation_error", "email"),
        (b'{"email": "a@b.com", "tags": "news"}', "validation_error", "tags"),
        (b'{"email": "a@b.com", "tags": [1]}', "validation_error", "tags[0]"),
        (b'{"email": "a@b.com", "nope": 1}', "validation_error", "nope"),
        (
            b'{"email": "a@b.com", "customFields": {"k": [1]}}',
            "validation_error",
            "customFields[...]",
        ),
        (b'{"email": "a@b.com", "customFields": {"bad key": "v"}}', "validation_error", None),
        (b'{"email": "not-an-address"}', "validation_error", "email"),
        (
            b'{"email": "a@b.com", "firstName": "x\\r\\nBcc: evil@x.com"}',
            "validation_error",
            "firstName",
        ),
        (b'{"email": "a@b.com", "status": "vip"}', "validation_error", "status"),
        (b'{"email": "a@b.com", "tags": ["a;b"]}', "validation_error", "tags[0]"),
    ],
)
async def test_bad_contact_bodies_get_400_and_write_nothing(
    tenant: Tenant, body: bytes, code: str, field: str | None
) -> None:
    r = await tenant.http.post(
        "/v1/mail/contacts", content=body, headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == code
    assert err["message"]
    if field is not None:
        assert err["field"] == field
    assert await _count(tenant) == 0


async def test_wrong_content_type_is_415(tenant: Tenant) -> None:
    r = await tenant.http.post(
        "/v1/mail/contacts", content=b'{"email":"a@b.com"}', headers={"Content-Type": "text/plain"}
    )
    assert r.status_code == 415
    assert r.json()["error"]["code"] == "unsupported_media_type"
    r = await tenant.http.post(
        "/v1/mail/contacts/import", content=b"x", headers={"Content-Type": "application/xml"}
    )
    assert r.status_code == 415
    assert await _count(tenant) == 0


async def test_missing_or_wrong_key_is_401(api: Api) -> None:
    async with api.anonymous() as http:
        for headers in ({}, {"Authorization": "Bearer mc_wrong"}, {"Authorization": "Basic abc"}):
            r = await http.get("/v1/mail/contacts", headers=headers)
            assert r.status_code == 401
            assert r.json()["error"]["code"] == "unauthorized"
            assert r.headers["www-authenticate"] == "Bearer"


async def test_unknown_route_404_and_wrong_method_405(tenant: Tenant) -> None:
    r = await tenant.http.get("/v1/nothing")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = await tenant.http.put("/v1/mail/contacts")
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"


async def test_bodies_over_the_limit_are_413_and_write_nothing(settings: Settings) -> None:
    small = Settings.load(
        env={},
        database_url=settings.database_url,
        max_body_bytes=2_000,
        max_import_bytes=50_000,
    )
    import trio

    async with Mailcore.open(small) as mc, trio.open_nursery() as nursery:
        base = (await nursery.start(serve, mc, "127.0.0.1", 0))[0]
        created = await mc.accounts.create("t")
        auth = {"Authorization": f"Bearer {created.api_key}"}
        async with httpx.AsyncClient(base_url=base, headers=auth) as http:
            big = {"email": "a@b.com", "firstName": "x" * 5_000}
            r = await http.post("/v1/mail/contacts", json=big)
            assert r.status_code == 413
            assert r.json()["error"]["code"] == "payload_too_large"

            # Chunked (no Content-Length): refused while streaming.
            async def chunks():  # type: ignore[no-untyped-def]
                for _ in range(100):
                    yield b"x" * 1_000

            r = await http.post(
                "/v1/mail/contacts/import", content=chunks(), headers={"Content-Type": "text/csv"}
            )
            assert r.status_code == 413
            # The import limit is separate and larger than the JSON limit.
            rows = "email\n" + "".join(f"u{i}@example.com\n" for i in range(1_000))
            assert 2_000 < len(rows) < 50_000
            r = await http.post(
                "/v1/mail/contacts/import", content=rows, headers={"Content-Type": "text/csv"}
            )
            assert r.status_code == 200 and r.json()["created"] == 1_000
            r = await http.get("/v1/mail/contacts", params={"email": "a@b.com"})
            assert r.json()["data"] == []
        nursery.cancel_scope.cancel()


async def test_bad_query_parameters_are_400(tenant: Tenant) -> None:
    for params, field in (
        ({"limit": "x"}, "limit"),
        ({"limit": "0"}, "limit"),
        ({"limit": "100000"}, "limit"),
        ({"after": "!!"}, "after"),
        ({"status": "nope"}, "status"),
        ({"email": "nope"}, "email"),
    ):
        r = await tenant.http.get("/v1/mail/contacts", params=params)
        assert r.status_code == 400, params
        assert r.json()["error"]["field"] == field
