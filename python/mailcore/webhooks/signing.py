"""Standard Webhooks signatures (``webhook-id``, ``webhook-timestamp``,
``webhook-signature: v1,<base64 HMAC-SHA256 of id.timestamp.body>``).

An endpoint's secret is derived from the server's secret key, the endpoint id and a
version number: nothing secret is stored, rotating is a version bump, and the secret
shown at creation is always the one in use.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

PREFIX = "whsec_"


def endpoint_secret(server_secret: str, endpoint_id: str, version: int) -> str:
    raw = hmac.new(
        server_secret.encode(), f"webhook:{endpoint_id}:{version}".encode(), hashlib.sha256
    ).digest()
    return PREFIX + base64.b64encode(raw).decode()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix(PREFIX))
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def headers(secret: str, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, msg_id, timestamp, body),
        "content-type": "application/json",
        "user-agent": "mailcore-webhooks/0.1",
    }
