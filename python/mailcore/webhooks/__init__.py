"""Webhooks: event payloads, the durable outbox (in the store), Standard Webhooks
signing, SSRF-safe delivery with retries (:mod:`.dispatcher`)."""

from __future__ import annotations

from .events import EVENT_TYPES, Event, EventType
from .signing import endpoint_secret, sign

__all__ = ["EVENT_TYPES", "Event", "EventType", "endpoint_secret", "sign"]
