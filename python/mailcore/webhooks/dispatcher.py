"""Delivering the outbox: claim due deliveries (leased, so a killed dispatcher's work is
picked up again), POST each signed to its endpoint with a timeout, record the outcome.
Retries follow the schedule with jitter and honour ``Retry-After``; a 410 disables the
endpoint, and so does failing for longer than the configured days."""

from __future__ import annotations

import email.utils
import hashlib
import logging
import random
import time
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

import anyio
import httpx
from anyio.abc import TaskStatus

from ..errors import ValidationError
from ..node import WebhookActivity
from ..store import DeliveryOutcome, DeliveryWork
from .signing import endpoint_secret, headers
from .ssrf import TargetRefused, check_url, resolve

if TYPE_CHECKING:
    from ..facade import Mailcore

log = logging.getLogger("mailcore.webhooks")
CLAIM = 1000
MAX_RETRY_AFTER = 86_400.0


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """``Retry-After`` as seconds or an HTTP date; None if absent or unreadable."""
    if not value:
        return None
    if value.strip().isdigit():
        return min(float(value), MAX_RETRY_AFTER)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return min(max(0.0, when.timestamp() - now), MAX_RETRY_AFTER)


class WebhookDispatcher:
    def __init__(self, mc: Mailcore, *, poll_seconds: float = 0.1) -> None:
        self.mc = mc
        self.settings = mc.settings
        self.poll_seconds = poll_seconds
        self._limiter = anyio.CapacityLimiter(mc.settings.webhook_concurrency)
        self.activity = WebhookActivity()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        self.mc.node.webhooks = self.activity
        async with httpx.AsyncClient(
            follow_redirects=False,
            timeout=self.settings.webhook_timeout_seconds,
            limits=httpx.Limits(max_connections=self.settings.webhook_concurrency),
        ) as client:
            task_status.started()
            while True:
                if not await self.run_once(client):
                    await anyio.sleep(self.poll_seconds)

    async def run_once(self, client: httpx.AsyncClient) -> int:
        """One round: claim, deliver in parallel, record. Returns how many were tried."""
        now = time.time()
        work = await self.mc.store.claim_deliveries(
            CLAIM, now, now + self.settings.webhook_lease_seconds
        )
        self.activity.last_claim_at = now
        if not work:
            return 0
        outcomes: list[DeliveryOutcome] = []

        async def one(group: list[DeliveryWork]) -> None:
            async with self._limiter:
                outcomes.extend(await self._deliver(client, group))

        async with anyio.create_task_group() as tg:
            for group in _requests(work):
                tg.start_soon(one, group)
        await self.mc.store.record_deliveries(outcomes, time.time())
        self.activity.delivered += sum(1 for o in outcomes if o.succeeded)
        return len(work)

    async def _deliver(
        self, client: httpx.AsyncClient, group: list[DeliveryWork]
    ) -> list[DeliveryOutcome]:
        """One request: a single event, or a batch (a JSON array) for a batching endpoint.
        The outcome of the request is the outcome of each delivery in it."""
        first = group[0]
        try:
            scheme, host, port = check_url(first.url)
            addresses = await resolve(host, port, self.settings.webhook_allow_private)
        except (TargetRefused, ValidationError) as exc:  # a refused target is never retried
            return [
                DeliveryOutcome(
                    delivery_seq=w.delivery_seq,
                    endpoint_id=w.endpoint_id,
                    succeeded=False,
                    status=None,
                    error=f"target refused: {exc}",
                    next_attempt_at=None,
                )
                for w in group
            ]
        if len(group) == 1:
            msg_id, body = first.event_id, first.payload
        else:
            # A batch's id covers its events; receivers dedupe on each event's own id.
            ids = ",".join(w.event_id for w in group).encode()
            msg_id = "msg_" + hashlib.sha256(ids).hexdigest()[:32]
            body = b"[" + b",".join(w.payload for w in group) + b"]"
        secret = endpoint_secret(self.mc.secret_key, first.endpoint_id, first.secret_version)
        sent_headers = headers(secret, msg_id, int(time.time()), body)
        # Connect to the address that was checked (no second lookup to rebind), with the
        # original name for Host and TLS.
        parts = urlsplit(first.url)
        ip = addresses[0]
        netloc = f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
        target = urlunsplit((scheme, netloc, parts.path or "/", parts.query, ""))
        sent_headers["host"] = parts.netloc
        extensions = {"sni_hostname": host} if scheme == "https" else {}
        status: int | None = None
        retry_after: float | None = None
        try:
            response = await client.post(
                target, content=body, headers=sent_headers, extensions=extensions
            )
            status = response.status_code
            await response.aclose()  # the body is never read, stored or echoed
            if 200 <= status < 300:
                return [
                    DeliveryOutcome(
                        delivery_seq=w.delivery_seq,
                        endpoint_id=w.endpoint_id,
                        succeeded=True,
                        status=status,
                        error=None,
                        next_attempt_at=None,
                    )
                    for w in group
                ]
            error = f"HTTP {status}"
            retry_after = retry_after_seconds(response.headers.get("retry-after"), time.time())
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"[:500]
        return [await self._failure(w, status, error, retry_after) for w in group]

    async def _failure(
        self, w: DeliveryWork, status: int | None, error: str, retry_after: float | None
    ) -> DeliveryOutcome:
        now = time.time()
        disable = None
        next_at: float | None = None
        if status == 410:
            disable = "the endpoint answered 410 Gone"
        else:
            since = await self.mc.store.endpoint_failing_since(w.endpoint_id)
            if since is not None and now - since > self.settings.webhook_disable_after_seconds:
                disable = "failing for too long"
            schedule = self.settings.webhook_retry_schedule
            if disable is None and w.attempts < len(schedule):
                delay = schedule[w.attempts] * random.uniform(0.9, 1.1)
                next_at = now + max(delay, retry_after or 0.0)
        if disable:
            log.warning("webhook %s disabled: %s", w.endpoint_id, disable)
        return DeliveryOutcome(
            delivery_seq=w.delivery_seq,
            endpoint_id=w.endpoint_id,
            succeeded=False,
            status=status,
            error=error,
            next_attempt_at=next_at,
            disable_endpoint=disable,
        )


def _requests(work: list[DeliveryWork]) -> list[list[DeliveryWork]]:
    """The requests to make: one per delivery, except for endpoints that batch, whose
    deliveries go together up to their batch size."""
    requests: list[list[DeliveryWork]] = []
    batched: dict[str, list[DeliveryWork]] = {}
    for w in work:
        if w.batch_size <= 1:
            requests.append([w])
        else:
            batched.setdefault(w.endpoint_id, []).append(w)
    for group in batched.values():
        size = group[0].batch_size
        requests += [group[i : i + size] for i in range(0, len(group), size)]
    return requests
