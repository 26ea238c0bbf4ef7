"""The :class:`Mailcore` facade: the public async API that the REST layer, the CLI and
embedding programs all use."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import anyio
from anyio.abc import TaskStatus

from .accounts import Accounts
from .audience import AudienceIndexes
from .campaigns import Campaigns
from .config import Settings
from .contacts import Contacts
from .ids import Clock, utcnow
from .store import Store, store_from_url
from .wallet import WalletService
from .webhooks.endpoints import WebhookEndpoints


class AccountScope:
    """Everything one account may do. Every call is scoped to ``account_id``: another
    account's ids are simply not found."""

    def __init__(self, mc: Mailcore, account_id: str) -> None:
        self.account_id = account_id
        self.contacts = Contacts(mc, account_id)
        self.campaigns = Campaigns(mc, account_id)
        self.wallet = WalletService(mc, account_id)
        self.webhooks = WebhookEndpoints(mc, account_id)


class Mailcore:
    """Open with ``async with Mailcore.open(settings) as mc:``."""

    def __init__(self, settings: Settings, store: Store, secret_key: str, clock: Clock) -> None:
        self.settings = settings
        self.store = store
        self.secret_key = secret_key
        self.clock = clock
        self.audiences = AudienceIndexes(store)
        self.accounts = Accounts(self)
        self._send_listeners: list[Callable[[], None]] = []

    def add_send_listener(self, listener: Callable[[], None]) -> None:
        """Called whenever a send starts or is cancelled (the dispatcher wakes up)."""
        self._send_listeners.append(listener)

    def remove_send_listener(self, listener: Callable[[], None]) -> None:
        self._send_listeners.remove(listener)

    def notify_send(self) -> None:
        for listener in self._send_listeners:
            listener()

    async def run_sender(
        self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Deliver every campaign that is sending, until cancelled (resumes after a crash)."""
        from .sending import Dispatcher

        await Dispatcher(self).run(task_status=task_status)

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

    async def run_webhooks(
        self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Deliver the webhook outbox until cancelled (resumes after a crash)."""
        from .webhooks.dispatcher import WebhookDispatcher

        await WebhookDispatcher(self).run(task_status=task_status)

    def account(self, account_id: str) -> AccountScope:
        return AccountScope(self, account_id)
