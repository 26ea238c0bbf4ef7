"""Signed tokens and VERP return paths: the fast paths agree with the reference forms."""

from __future__ import annotations

import base64
import hashlib
import hmac

from hypothesis import given
from hypothesis import strategies as st

from mailcore import varint
from mailcore.inbound.verp import VerpCodec
from mailcore.tokens import TRACKING, UNSUBSCRIBE, TokenSigner, hmac_sha256


@given(key=st.binary(max_size=200), message=st.binary(max_size=300))
def test_hmac_sha256_is_hmac(key: bytes, message: bytes) -> None:
    assert hmac_sha256(key)(message) == hmac.new(key, message, hashlib.sha256).digest()


@given(n=st.integers(0, 2**70))
def test_varint_round_trips(n: int) -> None:
    encoded = varint.encode(n)
    assert varint.decode_all(encoded) == [n]
    assert all(b & 0x80 for b in encoded[:-1]) and not encoded[-1] & 0x80


@given(
    kind=st.sampled_from([UNSUBSCRIBE, TRACKING]), a=st.integers(0, 2**40), b=st.integers(0, 2**40)
)
def test_token_is_the_documented_encoding(kind: bytes, a: int, b: int) -> None:
    signer = TokenSigner("secret")
    payload = kind + varint.encode(a) + varint.encode(b)
    key = hashlib.sha256(b"mailcore-links:secret").digest()
    mac = hmac.new(key, payload, hashlib.sha256).digest()[:16]
    expected = base64.urlsafe_b64encode(payload + mac).rstrip(b"=").decode()
    assert signer.sign(kind, a, b) == expected
    assert signer.sign_payload(payload) == expected
    assert signer.verify(kind, expected, 2) == (a, b)


@given(
    secret=st.text(max_size=80),
    prefix=st.binary(max_size=12),
    numbers=st.lists(st.integers(0, 2**64 - 1), max_size=20),
    head=st.text(max_size=30),
)
def test_a_batch_of_tokens_is_each_token_signed_alone(
    secret: str, prefix: bytes, numbers: list[int], head: str
) -> None:
    """The engine's batch (what a render uses) makes the very tokens the documented
    encoding does, each verifiable."""
    signer = TokenSigner(secret)
    tokens = signer.sign_many(prefix, numbers, head)
    assert tokens == [head + signer.sign_payload(prefix + varint.encode(n)) for n in numbers]


@given(
    kind=st.sampled_from([UNSUBSCRIBE, TRACKING]),
    campaign=st.integers(0, 2**40),
    contacts=st.lists(st.integers(0, 2**40), min_size=1, max_size=20),
)
def test_a_batch_of_link_tokens_verifies(kind: bytes, campaign: int, contacts: list[int]) -> None:
    signer = TokenSigner("secret")
    urls = signer.sign_many(kind + varint.encode(campaign), contacts, "https://x.test/u/")
    for contact, url in zip(contacts, urls, strict=True):
        token = url.removeprefix("https://x.test/u/")
        assert signer.verify(kind, token, 2) == (campaign, contact)
        assert TokenSigner("other").verify(kind, token, 2) is None


@given(campaign=st.integers(0, 2**20), contact=st.integers(0, 2**30))
def test_verp_encoder_matches_encode(campaign: int, contact: int) -> None:
    codec = VerpCodec(b"secret")
    address = codec.encode("bounces", "b.example.com", campaign, contact)
    assert codec.encoder("bounces", "b.example.com", campaign)(contact) == address
    payload = varint.encode(campaign) + varint.encode(contact)
    key = hashlib.sha256(b"mailcore-verp:secret").digest()
    raw = payload + hmac.new(key, payload, hashlib.sha256).digest()[:10]
    token = base64.b32encode(raw).decode().rstrip("=").lower()
    assert address == f"bounces+{token}@b.example.com"
    assert codec.decode(address) == (campaign, contact)
