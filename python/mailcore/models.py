"""The wire schema: msgspec Structs for request bodies and responses (camelCase on the wire).

These Structs are the single description of each shape: the REST layer decodes and
encodes with them, the library returns them, and ``api/openapi.json`` is generated from
them.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType

ContactStatus = Literal["subscribed", "unsubscribed", "bounced", "complained"]
CampaignStatus = Literal["draft", "sending", "paused", "sent", "cancelled"]
CustomValue = str | int | float | bool

Email = Annotated[str, Meta(min_length=3, max_length=254, description="An email address")]
Tag = Annotated[
    str,
    Meta(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f\x7f,;]+$", description="A tag"),
]
Name = Annotated[str, Meta(max_length=200)]
Usd = Annotated[float, Meta(description="An amount in US dollars")]
Micros = Annotated[int, Meta(description="An amount in micro-dollars (1 USD = 1,000,000)")]


class _Wire(msgspec.Struct, rename="camel", kw_only=True, frozen=True, forbid_unknown_fields=True):
    pass


class _Out(msgspec.Struct, rename="camel", kw_only=True, frozen=True):
    pass


# -- contacts -----------------------------------------------------------------------


class ContactCreate(_Wire, frozen=True):
    email: Email
    first_name: Name | None = None
    last_name: Name | None = None
    tags: Annotated[list[Tag], Meta(max_length=100)] = msgspec.field(default_factory=list)
    custom_fields: dict[str, CustomValue] = msgspec.field(default_factory=dict)
    # A new contact is "subscribed" unless given; an upsert or import never re-subscribes
    # a contact that unsubscribed, bounced or complained.
    status: ContactStatus | None = None


class ContactUpdate(_Wire, frozen=True):
    """PATCH: only the fields present change. ``tags`` replaces the set; ``customFields``
    is merged key by key and a key set to null is removed."""

    email: Email | UnsetType = UNSET
    first_name: Name | UnsetType | None = UNSET
    last_name: Name | UnsetType | None = UNSET
    tags: Annotated[list[Tag], Meta(max_length=100)] | UnsetType = UNSET
    custom_fields: dict[str, CustomValue | None] | UnsetType = UNSET
    status: ContactStatus | UnsetType = UNSET


class Contact(_Out, frozen=True):
    id: str
    email: str
    first_name: str | None
    last_name: str | None
    tags: list[str]
    custom_fields: dict[str, CustomValue]
    status: ContactStatus
    created_at: str
    updated_at: str


class ContactUpsertResult(_Out, frozen=True):
    created: bool
    contact: Contact


class ContactPage(_Out, frozen=True):
    data: list[Contact]
    has_more: bool
    next_cursor: str | None


class ContactImport(_Wire, frozen=True):
    contacts: list[msgspec.Raw]


class ImportRowError(_Out, frozen=True):
    row: int
    code: str
    message: str
    email: str | None = None
    field: str | None = None


class ImportResult(_Out, frozen=True):
    total: int
    created: int
    updated: int
    errors: list[ImportRowError]


class Deleted(_Out, frozen=True):
    id: str
    deleted: bool = True


# -- campaigns ----------------------------------------------------------------------


class Sender(_Wire, frozen=True):
    email: Email
    name: Name | None = None


class Audience(_Wire, frozen=True):
    """Subscribed contacts having any of ``tags`` and none of ``excludeTags``."""

    tags: Annotated[list[Tag], Meta(min_length=1, max_length=100)]
    exclude_tags: Annotated[list[Tag], Meta(max_length=100)] = msgspec.field(default_factory=list)


class Content(_Wire, frozen=True):
    html: Annotated[str, Meta(min_length=1, max_length=2_000_000)]
    # Derived from the HTML when absent.
    text: Annotated[str, Meta(max_length=2_000_000)] | None = None


class Tracking(_Wire, frozen=True):
    """Open pixel and click redirects (signed, opaque tokens; no address in any URL)."""

    opens: bool = True
    clicks: bool = True


Subject = Annotated[str, Meta(min_length=1, max_length=998)]
Preheader = Annotated[str, Meta(max_length=500)]


class CampaignCreate(_Wire, frozen=True):
    name: Annotated[str, Meta(min_length=1, max_length=200)]
    subject: Subject
    from_: Sender = msgspec.field(name="from")
    audience: Audience
    content: Content
    preheader: Preheader = ""
    reply_to: Email | None = None
    tracking: Tracking = msgspec.field(default_factory=Tracking)


class CampaignUpdate(_Wire, frozen=True):
    name: Annotated[str, Meta(min_length=1, max_length=200)] | UnsetType = UNSET
    subject: Subject | UnsetType = UNSET
    preheader: Preheader | UnsetType = UNSET
    from_: Sender | UnsetType = msgspec.field(default=UNSET, name="from")
    reply_to: Email | UnsetType | None = UNSET
    audience: Audience | UnsetType = UNSET
    content: Content | UnsetType = UNSET
    tracking: Tracking | UnsetType = UNSET


class Campaign(_Out, frozen=True):
    id: str
    name: str
    status: CampaignStatus
    subject: str
    preheader: str
    from_: Sender = msgspec.field(name="from")
    reply_to: str | None
    audience: Audience
    content: Content
    tracking: Tracking
    audience_count: int
    estimated_cost: Usd
    currency: str
    created_at: str
    updated_at: str
    sent_at: str | None


class SendCost(_Out, frozen=True):
    estimated: Usd
    currency: str
    hold_id: str


class SendResult(_Out, frozen=True):
    id: str
    status: CampaignStatus
    audience_count: int
    cost: SendCost
    sent_at: str


class StatsCost(_Out, frozen=True):
    estimated: Usd
    actual: Usd
    currency: str
    estimated_micros: Micros
    actual_micros: Micros


class CampaignStats(_Out, frozen=True):
    """Counts of the campaign's recipients by final state; they add up to audienceCount."""

    id: str
    status: CampaignStatus
    audience_count: int
    delivered: int
    bounced: int
    deferred: int
    failed: int
    suppressed: int
    cancelled: int
    pending: int
    opened: int
    clicked: int
    total_opens: int
    total_clicks: int
    # Bounces of any time: at SMTP time and reported later by DSN (distinct contacts).
    hard_bounces: int
    soft_bounces: int
    complained: int
    unsubscribed: int
    cost: StatsCost
    last_error: str | None


class CampaignPage(_Out, frozen=True):
    data: list[Campaign]
    has_more: bool
    next_cursor: str | None


# -- wallet -------------------------------------------------------------------------


class Hold(_Out, frozen=True):
    id: str
    amount: Usd
    amount_micros: Micros
    reference: str | None
    created_at: str


class Wallet(_Out, frozen=True):
    balance: Usd
    available: Usd
    held: Usd
    balance_micros: Micros
    available_micros: Micros
    held_micros: Micros
    currency: str
    holds: list[Hold]


class HoldResolution(_Out, frozen=True):
    id: str
    posted_micros: Micros
    released_micros: Micros


class AccountCreated(_Out, frozen=True):
    account_id: str
    api_key: str


# -- health -------------------------------------------------------------------------


class SenderHealth(_Out, frozen=True):
    """What a sender node is working on."""

    campaigns: Annotated[
        dict[str, int],
        Meta(description="campaign id -> recipients this node has sent and recorded"),
    ]
    in_flight: Annotated[int, Meta(description="recipients leased and not yet recorded")]
    max_in_flight: int
    recorded: int
    last_claim_at: float | None


class WebhooksHealth(_Out, frozen=True):
    delivered: int
    last_claim_at: float | None


class Health(_Out, frozen=True):
    """One process of a deployment: 200 when its database answers, else 503."""

    status: Literal["ok", "unavailable"]
    node: Annotated[str, Meta(description="this process: host:pid:random")]
    roles: list[Literal["api", "sender", "webhooks"]]
    store: Literal["sqlite", "postgresql"]
    store_reachable: bool
    schema_version: int
    uptime_seconds: float
    sender: SenderHealth | None
    webhooks: WebhooksHealth | None


# -- webhooks -----------------------------------------------------------------------

WebhookEventType = Literal[
    "campaign.sent",
    "campaign.completed",
    "email.delivered",
    "email.opened",
    "email.clicked",
    "email.bounced",
    "email.complained",
    "contact.unsubscribed",
]


class WebhookCreate(_Wire, frozen=True):
    url: Annotated[str, Meta(min_length=8, max_length=2000)]
    # Absent: every event type.
    events: Annotated[list[WebhookEventType], Meta(min_length=1)] | None = None
    # Above 1: up to this many events per request, as a JSON array (high volume).
    batch_size: Annotated[int, Meta(ge=1, le=1000)] = 1


class WebhookUpdate(_Wire, frozen=True):
    url: Annotated[str, Meta(min_length=8, max_length=2000)] | UnsetType = UNSET
    events: Annotated[list[WebhookEventType], Meta(min_length=1)] | UnsetType = UNSET
    enabled: bool | UnsetType = UNSET
    batch_size: Annotated[int, Meta(ge=1, le=1000)] | UnsetType = UNSET
    # True: a new signing secret, returned once in this response.
    rotate_secret: bool = False


class Webhook(_Out, frozen=True):
    id: str
    url: str
    events: list[str]
    enabled: bool
    disabled_reason: str | None
    batch_size: int
    created_at: str
    updated_at: str
    # Only when created or rotated: the signing secret, shown once.
    secret: str | None = None


class WebhookPage(_Out, frozen=True):
    data: list[Webhook]


class WebhookDelivery(_Out, frozen=True):
    id: str
    event_id: str
    event_type: str
    state: Literal["pending", "sending", "succeeded", "failed"]
    attempts: int
    last_status: int | None
    last_error: str | None
    next_attempt_at: str | None


class WebhookDeliveryPage(_Out, frozen=True):
    data: list[WebhookDelivery]


class WebhookTestQueued(_Out, frozen=True):
    event_id: str


# -- pricing and errors -------------------------------------------------------------


class Price(_Out, frozen=True):
    amount: Usd
    amount_micros: Micros
    currency: str
    unit: str


class PricedEndpoint(_Out, frozen=True):
    method: str
    path: str
    free: bool
    price: Price | None
    display: str


class PriceList(_Out, frozen=True):
    data: list[PricedEndpoint]


class ErrorBody(_Out, frozen=True):
    code: str
    message: str
    field: str | None = None


class ErrorResponse(_Out, frozen=True):
    error: ErrorBody
