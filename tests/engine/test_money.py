"""mailcore._engine money functions vs a decimal.Decimal reference."""

from __future__ import annotations

import re
from decimal import ROUND_HALF_UP, Context, Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailcore import _engine as eng

I64_MIN = -(2**63)
I64_MAX = 2**63 - 1
i64 = st.integers(min_value=I64_MIN, max_value=I64_MAX)
CTX = Context(prec=60)
USD_RE = re.compile(r"-?[0-9]+(\.[0-9]{1,6})?", re.ASCII)


def ref_format(micros: int, decimals: int) -> str:
    value = CTX.divide(Decimal(micros), Decimal(1_000_000))
    q = value.quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_UP, context=CTX)
    if q.is_zero():
        q = q.copy_abs()  # the engine never prints "-0.00"
    return format(q, "f")


def test_constants() -> None:
    assert eng.PRICE_PER_EMAIL_MICROS == 300
    assert eng.MICROS_PER_USD == 1_000_000


def test_error_hierarchy() -> None:
    assert issubclass(eng.MoneyError, eng.EngineError)
    assert issubclass(eng.TemplateError, eng.EngineError)
    assert issubclass(eng.EngineError, Exception)


@pytest.mark.parametrize(
    ("micros", "decimals", "expected"),
    [
        (3_072_000, 2, "3.07"),
        (3_075_000, 2, "3.08"),
        (300, 4, "0.0003"),
        (5_000_000, 2, "5.00"),
        (-1_505_000, 2, "-1.51"),
        (3_072_000, 0, "3"),
        (2_500_000, 0, "3"),
        (-2_500_000, 0, "-3"),
        (0, 6, "0.000000"),
        (-4_999, 2, "0.00"),
        (I64_MAX, 6, "9223372036854.775807"),
        (I64_MIN, 6, "-9223372036854.775808"),
    ],
)
def test_format_examples(micros: int, decimals: int, expected: str) -> None:
    assert eng.format_micros(micros, decimals) == expected


def test_format_default_decimals_is_two() -> None:
    assert eng.format_micros(3_075_000) == "3.08"
    assert eng.format_micros(micros=1) == "0.00"


@pytest.mark.parametrize("decimals", [-1, 7, 100, 2**70])
def test_format_bad_decimals(decimals: int) -> None:
    with pytest.raises(eng.MoneyError):
        eng.format_micros(1, decimals)


@pytest.mark.parametrize("micros", [2**63, -(2**63) - 1, 10**30])
def test_format_out_of_range(micros: int) -> None:
    with pytest.raises(eng.MoneyError):
        eng.format_micros(micros)


def test_format_type_error() -> None:
    with pytest.raises(TypeError):
        eng.format_micros("1")  # type: ignore[arg-type]


@given(i64, st.integers(min_value=0, max_value=6))
def test_format_matches_decimal_reference(micros: int, decimals: int) -> None:
    assert eng.format_micros(micros, decimals) == ref_format(micros, decimals)


@given(i64)
def test_parse_roundtrips_format6(micros: int) -> None:
    assert eng.parse_usd(eng.format_micros(micros, 6)) == micros


def test_cost_examples() -> None:
    assert eng.cost_micros(10_240, eng.PRICE_PER_EMAIL_MICROS) == 3_072_000
    assert eng.cost_micros(0, 300) == 0
    assert eng.cost_micros(I64_MAX, 1) == I64_MAX


@pytest.mark.parametrize(
    ("count", "unit"),
    [(-1, 300), (1, -300), (2**62, 4), (I64_MAX, 2), (2**63, 1), (1, 2**64), (-(2**70), 1)],
)
def test_cost_errors(count: int, unit: int) -> None:
    with pytest.raises(eng.MoneyError):
        eng.cost_micros(count, unit)


@given(st.integers(min_value=-(2**64), max_value=2**64), st.integers(-(2**64), 2**64))
def test_cost_matches_checked_reference(count: int, unit: int) -> None:
    product = count * unit
    if count < 0 or unit < 0 or count > I64_MAX or unit > I64_MAX or product > I64_MAX:
        with pytest.raises(eng.MoneyError):
            eng.cost_micros(count, unit)
    else:
        assert eng.cost_micros(count, unit) == product


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("12.5", 12_500_000),
        ("0.0003", 300),
        ("-1", -1_000_000),
        ("0", 0),
        ("-0.000001", -1),
        ("007.10", 7_100_000),
        ("9223372036854.775807", I64_MAX),
        ("-9223372036854.775808", I64_MIN),
    ],
)
def test_parse_examples(text: str, expected: int) -> None:
    assert eng.parse_usd(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "1e3", "", "1.2345678", "abc", " 1", "1 ", "+1", "1.", ".5", "-", "--1", "1,5", "١",
        "1_000", "0x1", "9223372036854.775808", "-9223372036854.775809", "1" * 40,
    ],
)  # fmt: skip
def test_parse_rejects(text: str) -> None:
    with pytest.raises(eng.MoneyError):
        eng.parse_usd(text)


@given(st.text(alphabet="-0123456789.e+ x", max_size=24))
def test_parse_matches_grammar_reference(text: str) -> None:
    ok = USD_RE.fullmatch(text) is not None
    value = int(CTX.multiply(Decimal(text), Decimal(1_000_000))) if ok else None
    if value is None or not I64_MIN <= value <= I64_MAX:
        with pytest.raises(eng.MoneyError):
            eng.parse_usd(text)
    else:
        assert eng.parse_usd(text) == value
