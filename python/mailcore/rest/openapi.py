"""The OpenAPI 3.1 document, generated from the route table and the msgspec Structs.

``api/openapi.json`` is this document, written by ``mailcore openapi``; a test fails when
the committed file and the code differ.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from .. import __version__
from ..models import ErrorResponse
from ..webhooks.events import (
    CampaignCompletedData,
    CampaignSentData,
    ContactEventData,
    EmailEventData,
)
from .routes import ENDPOINTS, JSON

# The data of each event type, for the document's ``webhooks`` section.
EVENT_DATA: dict[str, Any] = {
    "campaign.sent": CampaignSentData,
    "campaign.completed": CampaignCompletedData,
    "email.delivered": EmailEventData,
    "email.opened": EmailEventData,
    "email.clicked": EmailEventData,
    "email.bounced": EmailEventData,
    "email.complained": EmailEventData,
    "contact.unsubscribed": ContactEventData,
}
_REF = "#/components/schemas/{name}"
_ERRORS = {
    "400": "Malformed JSON or a field that fails validation (error.field names it)",
    "401": "Missing or unknown API key",
    "404": "No such object in this account",
    "409": "Conflict with the object's current state",
    "413": "Body over the configured limit",
    "415": "Unsupported Content-Type",
}


def openapi() -> dict[str, Any]:
    types: list[Any] = [ErrorResponse, *EVENT_DATA.values()]
    for e in ENDPOINTS:
        types.append(e.response)
        if e.body is not None:
            types.append(e.body)
    schemas, components = msgspec.json.schema_components(types, ref_template=_REF)
    by_type = dict(zip(types, schemas, strict=True))
    paths: dict[str, dict[str, Any]] = {}
    for e in ENDPOINTS:
        op: dict[str, Any] = {
            "summary": e.summary,
            "operationId": _operation_id(e.method, e.path),
            "x-price": (
                "free"
                if e.price is None
                else {
                    "amountMicros": e.price.amount_micros,
                    "currency": e.price.currency,
                    "unit": e.price.unit,
                }
            ),
            "responses": {
                str(e.status): {
                    "description": "OK",
                    "content": {JSON: {"schema": by_type[e.response]}},
                },
                **{
                    str(code): {
                        "description": text,
                        "content": {JSON: {"schema": by_type[e.response]}},
                    }
                    for code, text in e.also
                },
                **{
                    code: {
                        "description": text,
                        "content": {JSON: {"schema": by_type[ErrorResponse]}},
                    }
                    for code, text in _ERRORS.items()
                    if (code != "401" or e.auth)
                    and (code not in ("413", "415") or e.body is not None or e.large_body)
                },
            },
        }
        params: list[dict[str, Any]] = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in re.findall(r"{(\w+)}", e.path)
        ]
        params += [
            {
                "name": name,
                "in": "query",
                "required": False,
                "description": text,
                "schema": {"type": "string"},
            }
            for name, text in e.query
        ]
        if params:
            op["parameters"] = params
        if e.auth:
            op["security"] = [{"bearer": []}]
        if e.body is not None:
            op["requestBody"] = {"required": True, "content": {JSON: {"schema": by_type[e.body]}}}
        elif e.large_body:
            import_schema = {
                "type": "object",
                "properties": {
                    "contacts": {
                        "type": "array",
                        "items": {"$ref": _REF.format(name="ContactCreate")},
                    }
                },
                "required": ["contacts"],
            }
            op["requestBody"] = {
                "required": True,
                "content": {
                    ct: {"schema": import_schema if ct == JSON else {"type": "string"}}
                    for ct in e.content_types
                },
            }
        paths.setdefault(e.path, {})[e.method.lower()] = op
    webhooks = {
        kind: {
            "post": {
                "summary": f"{kind} (signed per Standard Webhooks: webhook-id, "
                "webhook-timestamp, webhook-signature)",
                "requestBody": {
                    "required": True,
                    "content": {
                        JSON: {
                            "schema": {
                                "type": "object",
                                "properties": {
                                    "id": {"type": "string", "description": "evt_…"},
                                    "type": {"const": kind},
                                    "createdAt": {"type": "string"},
                                    "data": by_type[data],
                                },
                                "required": ["id", "type", "createdAt", "data"],
                            }
                        }
                    },
                },
                "responses": {"2XX": {"description": "acknowledged"}},
            }
        }
        for kind, data in EVENT_DATA.items()
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "mailcore", "version": __version__},
        "paths": paths,
        "webhooks": webhooks,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def _operation_id(method: str, path: str) -> str:
    words = [w for w in re.split(r"[/{}]+", path) if w and w not in ("v1", "mail")]
    return method.lower() + "".join(w.title() for w in words)


def openapi_json() -> bytes:
    """The document as committed: sorted keys, two-space indent, trailing newline."""
    return msgspec.json.format(msgspec.json.encode(openapi(), order="sorted"), indent=2) + b"\n"
