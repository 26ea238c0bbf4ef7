"""Prices and the conversion of integer micro-dollars to the figures shown on the wire.

All arithmetic is the engine's checked integer money; a float appears only at the edge,
from the engine's exactly-rounded decimal string.
"""

from __future__ import annotations

from . import _engine
from .models import Price

CURRENCY = "USD"
PRICE_PER_EMAIL_MICROS: int = _engine.PRICE_PER_EMAIL_MICROS
MICROS_PER_USD: int = _engine.MICROS_PER_USD


def usd(micros: int, decimals: int = 6) -> float:
    """The amount in dollars, rounded half-up to ``decimals`` places."""
    return float(_engine.format_micros(micros, decimals))


def estimate_micros(recipients: int) -> int:
    """The cost of sending to ``recipients``, in micros (exact)."""
    return _engine.cost_micros(recipients, PRICE_PER_EMAIL_MICROS)


def estimated_cost(recipients: int) -> float:
    """The estimate as shown on a campaign: rounded to cents (10,240 → 3.07)."""
    return usd(estimate_micros(recipients), 2)


def parse_usd(text: str) -> int:
    return _engine.parse_usd(text)


PER_RECIPIENT = Price(
    amount=usd(PRICE_PER_EMAIL_MICROS),
    amount_micros=PRICE_PER_EMAIL_MICROS,
    currency=CURRENCY,
    unit="recipient",
)


def display(price: Price | None) -> str:
    """``Free`` or ``$0.0003/recipient``, as in the price list."""
    if price is None:
        return "Free"
    return f"${_engine.format_micros(price.amount_micros, 4)}/{price.unit}"
