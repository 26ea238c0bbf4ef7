"""The :class:`Mailcore` facade: the public async API that the REST layer, the CLI and
embedding programs all use."""

from __future__ import annotations

import secrets
import time
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
from .models import Health, SenderHealth, WebhooksHealth
from .node import Node
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
        # This process as a node of a deployment (its id names the leases it holds).
        self.node = Node()

    async def health(self) -> Health:
        """This process: its roles, whether the database answers, what it is working on."""
        reachable = await self.store.ping()
        sender = self.node.sender
        hooks = self.node.webhooks
        return Health(
            status="ok" if reachable else "unavailable",
            node=self.node.id,
            roles=sorted(self.node.roles),  # type: ignore[arg-type]  # ROLES are the literals
            store="postgresql" if self.store.kind == "postgresql" else "sqlite",
            store_reachable=reachable,
            schema_version=self.store.schema_version,
            uptime_seconds=round(time.time() - self.node.started_at, 3),
            sender=None
            if sender is None
            else SenderHealth(
                campaigns=dict(sender.campaigns),
                in_flight=sender.in_flight,
                max_in_flight=self.settings.max_in_flight,
                recorded=sender.recorded,
                last_claim_at=sender.last_claim_at,
            ),
            webhooks=None
            if hooks is None
            else WebhooksHealth(delivered=hooks.delivered, last_claim_at=hooks.last_claim_at),
        )

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
        store = store_from_url(settings.database_url, pool_size=settings.database_pool_size)
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
