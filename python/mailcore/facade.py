"""The :class:`Mailcore` facade: the public async API that the REST layer, the CLI and
embedding programs all use."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from .accounts import Accounts
from .audience import AudienceIndexes
from .campaigns import Campaigns
from .config import Settings
from .contacts import Contacts
from .ids import Clock, utcnow
from .store import Store, store_from_url
from .wallet import WalletService


class AccountScope:
    """Everything one account may do. Every call is scoped to ``account_id``: another
    account's ids are simply not found."""

    def __init__(self, mc: Mailcore, account_id: str) -> None:
        self.account_id = account_id
        self.contacts = Contacts(mc, account_id)
        self.campaigns = Campaigns(mc, account_id)
        self.wallet = WalletService(mc, account_id)


class Mailcore:
    """Open with ``async with Mailcore.open(settings) as mc:``."""

    def __init__(self, settings: Settings, store: Store, secret_key: str, clock: Clock) -> None:
        self.settings = settings
        self.store = store
        self.secret_key = secret_key
        self.clock = clock
        self.audiences = AudienceIndexes(store)
        self.accounts = Accounts(self)

    @classmethod
    @asynccontextmanager
    async def open(
        cls, settings: Settings | None = None, *, clock: Clock = utcnow
    ) -> AsyncIterator[Mailcore]:
        settings = settings if settings is not None else Settings.load()
        store = store_from_url(settings.database_url)
        await store.open()
        try:
            secret = settings.secret_key or await store.get_or_set_meta(
                "secret_key", secrets.token_urlsafe(32)
            )
            yield cls(settings, store, secret, clock)
        finally:
            await store.close()

    def account(self, account_id: str) -> AccountScope:
        return AccountScope(self, account_id)
