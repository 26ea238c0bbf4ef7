"""Signed, opaque tokens for links in messages (unsubscribe now; tracking later).

A token is base64url(kind ‖ varint numbers ‖ HMAC-SHA256[:16]); it carries only internal
numbers, never an address, and cannot be altered without the secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from . import varint

UNSUBSCRIBE = b"u"
TRACKING = b"t"
_MAC_BYTES = 16


class TokenSigner:
    def __init__(self, secret: str) -> None:
        self._key = hashlib.sha256(b"mailcore-links:" + secret.encode()).digest()

    def sign(self, kind: bytes, *numbers: int) -> str:
        payload = kind + b"".join(varint.encode(n) for n in numbers)
        mac = hmac.new(self._key, payload, hashlib.sha256).digest()[:_MAC_BYTES]
        return base64.urlsafe_b64encode(payload + mac).rstrip(b"=").decode()

    def verify(self, kind: bytes, token: str, count: int) -> tuple[int, ...] | None:
        """The numbers in a valid token of ``kind``, or None for anything forged or altered."""
        if len(token) > 100:
            return None
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (ValueError, TypeError):
            return None
        if len(raw) <= _MAC_BYTES + len(kind):
            return None
        payload, mac = raw[:-_MAC_BYTES], raw[-_MAC_BYTES:]
        expected = hmac.new(self._key, payload, hashlib.sha256).digest()[:_MAC_BYTES]
        if not hmac.compare_digest(mac, expected) or not payload.startswith(kind):
            return None
        numbers = varint.decode_all(payload[len(kind) :])
        return tuple(numbers) if numbers is not None and len(numbers) == count else None
