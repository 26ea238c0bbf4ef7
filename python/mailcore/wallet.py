"""The account's wallet: integer micro-dollars, an append-only ledger and two-phase holds."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import ValidationError
from .ids import iso, new_id
from .models import Hold, HoldResolution, Wallet
from .pricing import CURRENCY, usd

if TYPE_CHECKING:
    from .facade import Mailcore


class WalletService:
    def __init__(self, mc: Mailcore, account_id: str) -> None:
        self._mc = mc
        self.account_id = account_id

    async def get(self) -> Wallet:
        row = await self._mc.store.wallet(self.account_id)
        return Wallet(
            balance=usd(row.balance),
            available=usd(row.balance - row.held),
            held=usd(row.held),
            balance_micros=row.balance,
            available_micros=row.balance - row.held,
            held_micros=row.held,
            currency=CURRENCY,
            holds=[
                Hold(
                    id=h.id,
                    amount=usd(h.amount),
                    amount_micros=h.amount,
                    reference=h.reference,
                    created_at=h.created_at,
                )
                for h in row.holds
            ],
        )

    async def credit(self, micros: int, memo: str | None = None) -> int:
        """Add funds (negative: remove, never below what is available). Returns the balance."""
        if micros == 0:
            raise ValidationError("the amount must not be zero", field="amount")
        return await self._mc.store.credit(self.account_id, micros, memo, iso(self._mc.clock()))

    async def place_hold(self, micros: int, reference: str | None = None) -> Hold:
        """Reserve ``micros``; raises InsufficientFunds if ``available`` would go below zero."""
        if micros < 0:
            raise ValidationError("a hold cannot be negative", field="amount")
        row = await self._mc.store.place_hold(
            self.account_id, new_id("hold"), micros, reference, iso(self._mc.clock())
        )
        return Hold(
            id=row.id,
            amount=usd(row.amount),
            amount_micros=row.amount,
            reference=row.reference,
            created_at=row.created_at,
        )

    async def settle_hold(self, hold_id: str, post_micros: int) -> HoldResolution:
        """Charge ``post_micros`` of the hold and release the rest, exactly once."""
        if post_micros < 0:
            raise ValidationError("the posted amount cannot be negative", field="amount")
        row = await self._mc.store.settle_hold(
            self.account_id, hold_id, post_micros, iso(self._mc.clock())
        )
        return HoldResolution(
            id=row.id, posted_micros=post_micros, released_micros=row.amount - post_micros
        )

    async def release_hold(self, hold_id: str) -> HoldResolution:
        return await self.settle_hold(hold_id, 0)
