"""Event types and payloads: ``{"id": "evt_…", "type": …, "createdAt": …, "data": {…}}``.

The Structs here are the wire schema of webhook bodies (and feed the OpenAPI document).
"""

from __future__ import annotations

from typing import Literal

import msgspec

from ..ids import new_id
from ..store.base import EventRecord

EventType = Literal[
    "campaign.sent",
    "campaign.completed",
    "email.delivered",
    "email.opened",
    "email.clicked",
    "email.bounced",
    "email.complained",
    "contact.unsubscribed",
]
EVENT_TYPES: tuple[str, ...] = EventType.__args__  # type: ignore[attr-defined]
TEST_EVENT = "webhook.test"


class _Data(msgspec.Struct, rename="camel", kw_only=True, frozen=True, omit_defaults=True):
    pass


class EmailEventData(_Data, frozen=True):
    """An event about one email: ``emailId`` is the local part of its Message-ID."""

    campaign_id: str
    contact_id: str | None
    email: str | None
    email_id: str
    smtp_response: str | None = None
    bounce_type: Literal["hard", "soft"] | None = None
    url: str | None = None
    user_agent: str | None = None


class CampaignSentData(_Data, frozen=True):
    campaign_id: str
    audience_count: int
    hold_id: str


class CampaignCompletedData(_Data, frozen=True):
    campaign_id: str
    status: Literal["sent", "cancelled"]
    audience_count: int
    delivered: int
    bounced: int
    failed: int
    suppressed: int
    cancelled: int
    charged_micros: int


class ContactEventData(_Data, frozen=True):
    contact_id: str
    email: str
    campaign_id: str | None = None


class TestData(_Data, frozen=True):
    endpoint_id: str
    message: str = "a test event from mailcore"


EventData = EmailEventData | CampaignSentData | CampaignCompletedData | ContactEventData | TestData


class Event(msgspec.Struct, rename="camel", kw_only=True, frozen=True):
    id: str
    type: str
    created_at: str
    data: EventData


encode_event = msgspec.json.Encoder().encode


def record(account_id: str, type_: str, data: EventData, created_at: str) -> EventRecord:
    """An outbox record: the complete, final body, so every retry sends the same bytes."""
    event_id = new_id("evt")
    body = encode_event(Event(id=event_id, type=type_, created_at=created_at, data=data))
    return EventRecord(
        id=event_id, account_id=account_id, type=type_, payload=body, created_at=created_at
    )
