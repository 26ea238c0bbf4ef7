"""``api/openapi.json`` is generated from the code; this fails when the two drift."""

from __future__ import annotations

import json
from pathlib import Path

from mailcore.rest import ENDPOINTS
from mailcore.rest.openapi import openapi, openapi_json

COMMITTED = Path(__file__).resolve().parents[2] / "api" / "openapi.json"


def test_committed_document_matches_the_code() -> None:
    assert COMMITTED.read_bytes() == openapi_json(), "run `make openapi` and commit the result"


def test_every_route_is_documented_with_schemas() -> None:
    doc = openapi()
    for e in ENDPOINTS:
        op = doc["paths"][e.path][e.method.lower()]
        schema = op["responses"][str(e.status)]["content"]["application/json"]["schema"]
        name = schema["$ref"].rsplit("/", 1)[1]
        assert name in doc["components"]["schemas"]
        assert ("security" in op) is e.auth
    contact = doc["components"]["schemas"]["ContactCreate"]
    assert contact["required"] == ["email"]
    assert {"firstName", "lastName", "customFields", "tags"} <= set(contact["properties"])
    json.dumps(doc)  # plain JSON all the way down


def test_every_event_type_is_documented_as_a_webhook() -> None:
    from mailcore.webhooks.events import EVENT_TYPES

    doc = openapi()
    assert set(doc["webhooks"]) == set(EVENT_TYPES)
    body = doc["webhooks"]["email.bounced"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"]["properties"]["type"] == {"const": "email.bounced"}
    data_ref = body["schema"]["properties"]["data"]["$ref"]
    assert data_ref.endswith("/EmailEventData")
    assert "bounceType" in doc["components"]["schemas"]["EmailEventData"]["properties"]
