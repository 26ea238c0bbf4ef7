from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailcore.inbound import VerpCodec

from . import samples

CODEC = VerpCodec(b"test-secret")
SEQ = st.integers(min_value=0, max_value=2**40)
LOCAL = st.from_regex(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]{1,8}(\.[A-Za-z0-9_+-]{1,5}){0,2}", fullmatch=True
)


def test_fixture_return_path() -> None:
    codec = VerpCodec(samples.VERP_SECRET)
    assert codec.encode("bounces", "mc.example", 7, 42) == samples.VERP
    assert codec.decode(samples.VERP) == (7, 42)
    assert codec.decode(f"<{samples.VERP.upper()}>") == (7, 42)


def test_shape() -> None:
    address = CODEC.encode("bounces", "mc.example", 2**40, 2**40)
    local, _, domain = address.partition("@")
    assert domain == "mc.example"
    prefix, _, token = local.partition("+")
    assert prefix == "bounces"
    assert token == token.lower() and "=" not in token
    assert len(local) <= 64


def test_not_ours() -> None:
    address = CODEC.encode("bounces", "mc.example", 1, 2)
    assert VerpCodec(b"other-secret").decode(address) is None
    for other in ["bounces@mc.example", "bounces+@mc.example", "x+abc@mc.example", "", "@", "+@"]:
        assert CODEC.decode(other) is None


def test_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        VerpCodec(b"")
    with pytest.raises(ValueError):
        CODEC.encode("bounces", "mc.example", -1, 0)
    with pytest.raises(ValueError):
        CODEC.encode("has space", "mc.example", 1, 1)
    with pytest.raises(ValueError):
        CODEC.encode("a@b", "mc.example", 1, 1)
    with pytest.raises(ValueError):
        CODEC.encode("b", "not a domain", 1, 1)
    with pytest.raises(ValueError):
        CODEC.encode("x" * 40, "mc.example", 2**40, 2**40)  # local part over 64


@settings(max_examples=300, deadline=None)
@given(LOCAL, SEQ, SEQ)
def test_round_trip(local: str, campaign: int, contact: int) -> None:
    address = CODEC.encode(local, "mc.example", campaign, contact)
    assert len(address.partition("@")[0]) <= 64
    assert CODEC.decode(address) == (campaign, contact)
    assert CODEC.decode(address.upper()) == (campaign, contact)
    assert CODEC.decode(address.lower()) == (campaign, contact)


@settings(max_examples=300, deadline=None)
@given(SEQ, SEQ, st.data())
def test_any_single_character_change_is_rejected(
    campaign: int, contact: int, data: st.DataObject
) -> None:
    address = CODEC.encode("bounces", "mc.example", campaign, contact)
    local, _, domain = address.partition("@")
    prefix, _, token = local.partition("+")
    i = data.draw(st.integers(0, len(token) - 1), label="position")
    replacement = data.draw(
        st.sampled_from("abcdefghijklmnopqrstuvwxyz234567ABCXYZ0189=+-@._").filter(
            lambda c: c.lower() != token[i]
        ),
        label="replacement",
    )
    altered = token[:i] + replacement + token[i + 1 :]
    assert CODEC.decode(f"{prefix}+{altered}@{domain}") is None


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=100))
def test_decode_never_raises(address: str) -> None:
    assert CODEC.decode(address) is None
