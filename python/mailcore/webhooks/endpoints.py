"""Webhook endpoints of an account: create (the secret shown once), list, change, delete,
send a test event, list and replay deliveries."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

import msgspec

from ..errors import NotFound, ValidationError
from ..ids import iso, new_id
from ..models import (
    Webhook,
    WebhookCreate,
    WebhookDelivery,
    WebhookDeliveryPage,
    WebhookPage,
    WebhookTestQueued,
    WebhookUpdate,
)
from ..store import EndpointRow
from .events import EVENT_TYPES, TEST_EVENT, TestData, record
from .signing import endpoint_secret
from .ssrf import TargetRefused, check_url, resolve

if TYPE_CHECKING:
    from ..facade import Mailcore


class WebhookEndpoints:
    def __init__(self, mc: Mailcore, account_id: str) -> None:
        self._mc = mc
        self.account_id = account_id

    async def _check_target(self, url: str) -> str:
        _scheme, host, port = check_url(url)
        try:
            await resolve(host, port, self._mc.settings.webhook_allow_private)
        except TargetRefused as exc:
            raise ValidationError(f"webhook URL refused: {exc}", field="url") from exc
        return url

    def _wire(self, row: EndpointRow, with_secret: bool = False) -> Webhook:
        secret = (
            endpoint_secret(self._mc.secret_key, row.id, row.secret_version)
            if with_secret
            else None
        )
        return Webhook(
            id=row.id,
            url=row.url,
            events=row.events,
            enabled=row.enabled,
            disabled_reason=row.disabled_reason,
            batch_size=row.batch_size,
            created_at=row.created_at,
            updated_at=row.updated_at,
            secret=secret,
        )

    async def create(self, body: WebhookCreate) -> Webhook:
        url = await self._check_target(body.url)
        now = iso(self._mc.clock())
        row = EndpointRow(
            seq=0,
            id=new_id("wh"),
            account_id=self.account_id,
            url=url,
            events=list(dict.fromkeys(body.events or EVENT_TYPES)),
            enabled=True,
            disabled_reason=None,
            secret_version=1,
            created_at=now,
            updated_at=now,
            batch_size=body.batch_size,
        )
        return self._wire(await self._mc.store.insert_endpoint(row), with_secret=True)

    async def _row(self, endpoint_id: str) -> EndpointRow:
        row = await self._mc.store.get_endpoint(self.account_id, endpoint_id)
        if row is None:
            raise NotFound(f"no webhook {endpoint_id}", id=endpoint_id)
        return row

    async def get(self, endpoint_id: str) -> Webhook:
        return self._wire(await self._row(endpoint_id))

    async def list(self) -> WebhookPage:
        return WebhookPage(
            data=[self._wire(r) for r in await self._mc.store.list_endpoints(self.account_id)]
        )

    async def update(self, endpoint_id: str, body: WebhookUpdate) -> Webhook:
        row = await self._row(endpoint_id)
        if not isinstance(body.url, msgspec.UnsetType):
            row.url = await self._check_target(body.url)
        if not isinstance(body.events, msgspec.UnsetType):
            row.events = list(dict.fromkeys(body.events))
        if not isinstance(body.enabled, msgspec.UnsetType):
            row.enabled = body.enabled
            row.disabled_reason = None if body.enabled else "disabled by the account"
        if not isinstance(body.batch_size, msgspec.UnsetType):
            row.batch_size = body.batch_size
        if body.rotate_secret:
            row.secret_version += 1
        row.updated_at = iso(self._mc.clock())
        return self._wire(await self._mc.store.update_endpoint(row), with_secret=body.rotate_secret)

    async def delete(self, endpoint_id: str) -> None:
        if not await self._mc.store.delete_endpoint(self.account_id, endpoint_id):
            raise NotFound(f"no webhook {endpoint_id}", id=endpoint_id)

    async def send_test(self, endpoint_id: str) -> WebhookTestQueued:
        row = await self._row(endpoint_id)
        event = record(
            self.account_id, TEST_EVENT, TestData(endpoint_id=row.id), iso(self._mc.clock())
        )
        await self._mc.store.emit([event], self._mc.clock().timestamp(), only=row.id)
        return WebhookTestQueued(event_id=event.id)

    async def deliveries(self, endpoint_id: str, limit: int = 50) -> WebhookDeliveryPage:
        await self._row(endpoint_id)
        rows = await self._mc.store.list_deliveries(self.account_id, endpoint_id, min(limit, 200))
        return WebhookDeliveryPage(
            data=[
                WebhookDelivery(
                    id=f"dlv_{r.delivery_seq}",
                    event_id=r.event_id,
                    event_type=r.event_type,
                    state=r.state,  # type: ignore[arg-type]  # the store holds valid states
                    attempts=r.attempts,
                    last_status=r.last_status,
                    last_error=r.last_error,
                    next_attempt_at=(
                        iso(datetime.fromtimestamp(r.next_attempt_at, UTC))
                        if r.state == "pending" and r.next_attempt_at
                        else None
                    ),
                )
                for r in rows
            ]
        )

    async def replay(self, endpoint_id: str, delivery_id: str) -> None:
        """Send a finished delivery again (same event id and body)."""
        await self._row(endpoint_id)
        seq = delivery_id.removeprefix("dlv_")
        if not seq.isdigit() or not await self._mc.store.replay_delivery(
            self.account_id, endpoint_id, int(seq), self._mc.clock().timestamp()
        ):
            raise NotFound(f"no finished delivery {delivery_id}", id=delivery_id)
