"""``GET /v1/pricing``: every endpoint of the route table with its price."""

from __future__ import annotations

from functools import cache

from ..models import PricedEndpoint, PriceList
from ..pricing import display


@cache
def price_list() -> PriceList:
    from .routes import ENDPOINTS

    return PriceList(
        data=[
            PricedEndpoint(
                method=e.method,
                path=e.display_path,
                free=e.price is None,
                price=e.price,
                display=display(e.price),
            )
            for e in ENDPOINTS
        ]
    )
