"""Email normalisation, tags, custom fields, ids and cursors: property tests where the
input space is large."""

from __future__ import annotations

import re
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailcore import ValidationError
from mailcore.ids import decode_cursor, encode_cursor, new_id
from mailcore.validation import clean_custom_fields, clean_tags, clean_text, normalize_email

local = st.from_regex(r"[a-zA-Z0-9](?:[a-zA-Z0-9._+-]{0,20}[a-zA-Z0-9])?", fullmatch=True).filter(
    lambda s: ".." not in s
)
domain = st.from_regex(r"[a-z0-9]{1,10}(?:-[a-z0-9]{1,5})?\.[a-z]{2,6}", fullmatch=True)


@given(local, domain)
def test_valid_addresses_normalise_idempotently_and_case_insensitively(lp: str, d: str) -> None:
    email = f"{lp}@{d}"
    n = normalize_email(email)
    assert n == email.lower()
    assert normalize_email(n) == n
    assert normalize_email(f"  {email.upper()} ") == n


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "plain",
        "@x.com",
        "a@",
        "a@b",
        "a@@b.com",
        "a..b@x.com",
        ".a@x.com",
        "a.@x.com",
        "a b@x.com",
        "a@-x.com",
        "a@x-.com",
        "a@x..com",
        "a@1.2.3.4",
        "a\r\n@x.com",
        "a@x.com\r\nBcc: y@z.com",
        "x" * 65 + "@x.com",
        "a@" + "b" * 64 + ".com",
    ],
)
def test_invalid_addresses_are_refused(bad: str) -> None:
    with pytest.raises(ValidationError) as info:
        normalize_email(bad)
    assert info.value.field == "email"


def test_international_addresses() -> None:
    assert normalize_email("Zoë@Bücher.DE") == "zoë@bücher.de"


@given(st.text())
def test_no_control_character_survives_cleaning(text: str) -> None:
    try:
        out = clean_text(text, "firstName")
    except ValidationError:
        return
    assert out is None or not re.search(r"[\x00-\x1f\x7f]", out)


def test_tags_are_trimmed_deduplicated_and_checked() -> None:
    assert clean_tags([" a ", "b", "a", "b "]) == ["a", "b"]
    for bad in ([""], ["x" * 65], ["a,b"], ["a;b"], ["a\nb"], [f"t{i}" for i in range(101)]):
        with pytest.raises(ValidationError):
            clean_tags(bad)


def test_custom_fields() -> None:
    ok = {"company": "Acme", "seats": 3, "ratio": 0.5, "vip": True, "_x-y": ""}
    assert clean_custom_fields(ok) == ok
    for bad in (
        {"1abc": "x"},
        {"a b": "x"},
        {"k": float("nan")},
        {"k": "x" * 2001},
        {"k": "\x00"},
        {"k": [1]},
        {f"k{i}": i for i in range(51)},
        {"k": 2**60},
    ):
        with pytest.raises(ValidationError):
            clean_custom_fields(bad)


@given(st.integers(0, 2**62))
def test_cursor_round_trip(seq: int) -> None:
    assert decode_cursor(encode_cursor(seq)) == seq


@given(st.text(max_size=30))
def test_a_forged_cursor_is_a_clean_error(text: str) -> None:
    try:
        seq = decode_cursor(text)
    except ValidationError as exc:
        assert exc.field == "after"
    else:
        assert seq >= 0


def test_ids_have_prefixes_and_do_not_repeat() -> None:
    ids = {new_id("con") for _ in range(10_000)}
    assert len(ids) == 10_000
    assert all(re.fullmatch(r"con_[0-9a-f]{30}", i) for i in ids)
    # Later batches sort after earlier ones (the leading 48 bits are milliseconds).
    first = new_id("srt")
    time.sleep(0.02)
    for _ in range(2_000):
        last = new_id("srt")
    assert first[:16] < last[:16]  # prefix + 12 hex digits of milliseconds


@given(
    st.one_of(
        st.text(alphabet=st.characters(max_codepoint=127), max_size=80),
        st.builds(lambda lp, d: f"{lp}@{d}", local, domain),
        st.from_regex(r"[a-z.\-_+]{1,10}@[a-z0-9.\-]{1,20}", fullmatch=True),
    )
)
def test_the_ascii_fast_path_agrees_with_the_general_rules(text: str) -> None:
    """The one-regex path for ASCII addresses accepts only what the general rules accept,
    with the same result."""
    from mailcore import validation

    email = text.strip().lower()
    if validation._ASCII_EMAIL.fullmatch(email) is None:
        return
    assert validation._normalize_any_email(text, "email") == email
