"""Signed VERP return paths: ``{local}+{token}@{domain}``.

The token is base32 (lower-case, unpadded) of
``varint(campaign_seq) ‖ varint(contact_seq) ‖ HMAC-SHA256(key, varints)[:10]``, so a
bounce sent to the return path names the campaign and contact without any lookup, and
cannot be forged or altered without the secret. ``key`` is derived from the secret
(``SHA-256("mailcore-verp:" ‖ secret)``), the way :class:`mailcore.tokens.TokenSigner`
derives its own, so sharing one application secret never lets one kind of token stand in
for another. Decoding is case-insensitive (some MTAs lower- or upper-case addresses).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Callable

from .. import varint
from ..tokens import hmac_sha256

_MAC_BYTES = 10
_MAX_LOCAL_PART = 64  # RFC 5321 §4.5.3.1.1
_MIN_TOKEN = 20  # two one-byte varints + MAC = 12 bytes → 20 base32 characters
_BASE32 = frozenset("abcdefghijklmnopqrstuvwxyz234567")
_ATEXT = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*\Z")
_DOMAIN = re.compile(r"[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\Z")


def _b32(data: bytes) -> str:
    return base64.b32encode(data).decode("ascii").rstrip("=").lower()


class VerpCodec:
    """Encode and verify signed VERP return paths with one secret."""

    __slots__ = ("_key",)

    def __init__(self, secret: bytes) -> None:
        if not secret:
            raise ValueError("VERP secret must not be empty")
        self._key = hmac_sha256(hashlib.sha256(b"mailcore-verp:" + secret).digest())

    def _mac(self, payload: bytes) -> bytes:
        return self._key(payload)[:_MAC_BYTES]

    def encode(self, local: str, domain: str, campaign_seq: int, contact_seq: int) -> str:
        """``{local}+{token}@{domain}``; ValueError when ``local`` is not a dot-atom,
        ``domain`` is not a host name, or local part + token exceed 64 characters."""
        return self.encoder(local, domain, campaign_seq)(contact_seq)

    def encoder(self, local: str, domain: str, campaign_seq: int) -> Callable[[int], str]:
        """:meth:`encode` with the local part, domain and campaign fixed: those are checked
        and encoded once, the returned function signs a contact's return path."""
        if not _ATEXT.match(local):
            raise ValueError(f"not a dot-atom local part: {local!r}")
        if not _DOMAIN.match(domain):
            raise ValueError(f"not a domain: {domain!r}")
        if campaign_seq < 0:
            raise ValueError("sequence numbers must be non-negative")
        prefix = varint.encode(campaign_seq)
        mac = self._mac
        head = f"{local}+"
        tail = f"@{domain}"

        def encode(contact_seq: int) -> str:
            if contact_seq < 0:
                raise ValueError("sequence numbers must be non-negative")
            payload = prefix + varint.encode(contact_seq)
            tagged = head + _b32(payload + mac(payload))
            if len(tagged) > _MAX_LOCAL_PART:
                raise ValueError(f"VERP local part {tagged!r} is longer than 64 characters")
            return tagged + tail

        return encode

    def decode(self, address: str) -> tuple[int, int] | None:
        """``(campaign_seq, contact_seq)`` from a return path this codec signed; None for
        any other address, or one whose token was altered or forged."""
        addr = address.strip()
        if addr.startswith("<") and addr.endswith(">"):
            addr = addr[1:-1]
        local, at, _ = addr.rpartition("@")
        _, plus, token = local.rpartition("+")
        if not at or not plus or not _MIN_TOKEN <= len(token) < _MAX_LOCAL_PART:
            return None
        token = token.lower()
        if not set(token) <= _BASE32:
            return None
        try:
            raw = base64.b32decode(token.upper() + "=" * (-len(token) % 8))
        except (binascii.Error, ValueError):
            return None
        # Reject non-canonical spellings (stray bits in the last character).
        if _b32(raw) != token:
            return None
        payload, mac = raw[:-_MAC_BYTES], raw[-_MAC_BYTES:]
        if not hmac.compare_digest(mac, self._mac(payload)):
            return None
        numbers = varint.decode_all(payload)
        if numbers is None or len(numbers) != 2:
            return None
        return numbers[0], numbers[1]
