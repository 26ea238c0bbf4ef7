"""The route table: every endpoint once, with its schema and price. The Starlette routes,
the price list (``GET /v1/pricing``) and the OpenAPI document are all built from it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgspec
from starlette.requests import Request

from ..campaigns import DEFAULT_PAGE as CAMPAIGN_PAGE
from ..contacts import DEFAULT_PAGE as CONTACT_PAGE
from ..errors import UnsupportedMediaType, ValidationError
from ..facade import AccountScope, Mailcore
from ..feedback import FeedbackResult
from ..models import (
    Campaign,
    CampaignCreate,
    CampaignPage,
    CampaignStats,
    CampaignUpdate,
    Contact,
    ContactCreate,
    ContactPage,
    ContactUpdate,
    ContactUpsertResult,
    Deleted,
    Health,
    ImportResult,
    Price,
    PriceList,
    SendResult,
    Wallet,
    Webhook,
    WebhookCreate,
    WebhookDeliveryPage,
    WebhookPage,
    WebhookTestQueued,
    WebhookUpdate,
)
from ..pricing import PER_RECIPIENT
from ..webhooks.endpoints import WebhookEndpoints

JSON = "application/json"
CSV = "text/csv"


@dataclass(frozen=True, slots=True)
class Call:
    """What a handler gets: the request, the caller's scope and the decoded body."""

    request: Request
    mc: Mailcore
    scope: AccountScope | None
    body: Any
    raw_body: bytes
    content_type: str | None


Handler = Callable[[Call], Awaitable[tuple[int, Any]]]


@dataclass(frozen=True, slots=True)
class Endpoint:
    method: str
    path: str  # Starlette syntax, e.g. /v1/mail/contacts/{id}
    handler: Handler
    summary: str
    response: Any
    status: int = 200
    body: Any = None  # the msgspec type of a JSON body, if any
    content_types: tuple[str, ...] = (JSON,)
    auth: bool = True
    price: Price | None = None  # None: free
    large_body: bool = False  # bodies up to max_import_bytes instead of max_body_bytes
    query: tuple[tuple[str, str], ...] = ()  # (name, description) of query parameters
    # (status, description) of other answers with the same body as the success
    also: tuple[tuple[int, str], ...] = ()

    @property
    def display_path(self) -> str:
        """The path as in the price list: ``/v1/mail/campaigns/:id``."""
        return self.path.replace("{", ":").replace("}", "")


def _scope(call: Call) -> AccountScope:
    assert call.scope is not None
    return call.scope


def _int_param(request: Request, name: str, default: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValidationError(f"{name} must be an integer", field=name) from None


# -- contacts -----------------------------------------------------------------------


async def create_contact(call: Call) -> tuple[int, Any]:
    return 201, await _scope(call).contacts.create(call.body)


async def upsert_contact(call: Call) -> tuple[int, Any]:
    result = await _scope(call).contacts.upsert(call.body)
    return (201 if result.created else 200), result


async def list_contacts(call: Call) -> tuple[int, Any]:
    q = call.request.query_params
    return 200, await _scope(call).contacts.list(
        limit=_int_param(call.request, "limit", CONTACT_PAGE),
        after=q.get("after"),
        tag=q.get("tag"),
        status=q.get("status"),
        email=q.get("email"),
    )


async def get_contact(call: Call) -> tuple[int, Any]:
    return 200, await _scope(call).contacts.get(call.request.path_params["id"])


async def update_contact(call: Call) -> tuple[int, Any]:
    return 200, await _scope(call).contacts.update(call.request.path_params["id"], call.body)


async def delete_contact(call: Call) -> tuple[int, Any]:
    contact_id = call.request.path_params["id"]
    await _scope(call).contacts.delete(contact_id)
    return 200, Deleted(id=contact_id)


async def import_contacts(call: Call) -> tuple[int, Any]:
    contacts = _scope(call).contacts
    if call.content_type == CSV:
        return 200, await contacts.import_csv(call.raw_body)
    if call.content_type == JSON:
        return 200, await contacts.import_json(call.raw_body)
    raise UnsupportedMediaType("import accepts application/json or text/csv")  # pragma: no cover


# -- campaigns ----------------------------------------------------------------------


async def create_campaign(call: Call) -> tuple[int, Any]:
    return 201, await _scope(call).campaigns.create(call.body)


async def list_campaigns(call: Call) -> tuple[int, Any]:
    return 200, await _scope(call).campaigns.list(
        limit=_int_param(call.request, "limit", CAMPAIGN_PAGE),
        after=call.request.query_params.get("after"),
    )


async def get_campaign(call: Call) -> tuple[int, Any]:
    return 200, await _scope(call).campaigns.get(call.request.path_params["id"])


async def update_campaign(call: Call) -> tuple[int, Any]:
    return 200, await _scope(call).campaigns.update(call.request.path_params["id"], call.body)


async def delete_campaign(call: Call) -> tuple[int, Any]:
    campaign_id = call.request.path_params["id"]
    await _scope(call).campaigns.delete(campaign_id)
    return 200, Deleted(id=campaign_id)


async def send_campaign(call: Call) -> tuple[int, Any]:
    return 200, await _scope(call).campaigns.send(call.request.path_params["id"])


async def cancel_campaign(call: Call) -> tuple[int, Any]:
    return 200, await _scope(call).campaigns.cancel(call.request.path_params["id"])


async def pause_campaign(call: Call) -> tuple[int, Any]:
    return 200, await _scope(call).campaigns.pause(call.request.path_params["id"])


async def resume_campaign(call: Call) -> tuple[int, Any]:
    return 200, await _scope(call).campaigns.resume(call.request.path_params["id"])


async def campaign_stats(call: Call) -> tuple[int, Any]:
    return 200, await _scope(call).campaigns.stats(call.request.path_params["id"])


# -- webhooks -----------------------------------------------------------------------


def _hooks(call: Call) -> WebhookEndpoints:
    return _scope(call).webhooks


async def create_webhook(call: Call) -> tuple[int, Any]:
    return 201, await _hooks(call).create(call.body)


async def list_webhooks(call: Call) -> tuple[int, Any]:
    return 200, await _hooks(call).list()


async def get_webhook(call: Call) -> tuple[int, Any]:
    return 200, await _hooks(call).get(call.request.path_params["id"])


async def update_webhook(call: Call) -> tuple[int, Any]:
    return 200, await _hooks(call).update(call.request.path_params["id"], call.body)


async def delete_webhook(call: Call) -> tuple[int, Any]:
    endpoint_id = call.request.path_params["id"]
    await _hooks(call).delete(endpoint_id)
    return 200, Deleted(id=endpoint_id)


async def test_webhook(call: Call) -> tuple[int, Any]:
    return 202, await _hooks(call).send_test(call.request.path_params["id"])


async def webhook_deliveries(call: Call) -> tuple[int, Any]:
    limit = _int_param(call.request, "limit", 50)
    return 200, await _hooks(call).deliveries(call.request.path_params["id"], limit)


async def replay_delivery(call: Call) -> tuple[int, Any]:
    p = call.request.path_params
    await _hooks(call).replay(p["id"], p["delivery"])
    return 202, Deleted(id=p["delivery"], deleted=False)


async def inbound_report(call: Call) -> tuple[int, Any]:
    """A raw DSN or ARF report, applied within the caller's account."""
    from ..feedback import FeedbackProcessor

    scope = _scope(call)
    return 200, await FeedbackProcessor(call.mc).process(call.raw_body, account_id=scope.account_id)


# -- wallet and pricing -------------------------------------------------------------


async def get_wallet(call: Call) -> tuple[int, Any]:
    return 200, await _scope(call).wallet.get()


async def get_pricing(call: Call) -> tuple[int, Any]:
    from .pricelist import price_list

    return 200, price_list()


async def get_health(call: Call) -> tuple[int, Any]:
    health = await call.mc.health()
    return (200 if health.status == "ok" else 503), health


_PAGE = (("limit", "page size"), ("after", "the nextCursor of the previous page"))

ENDPOINTS: list[Endpoint] = [
    Endpoint(
        "POST",
        "/v1/mail/contacts",
        create_contact,
        "Create a contact",
        Contact,
        status=201,
        body=ContactCreate,
    ),
    Endpoint(
        "GET",
        "/v1/mail/contacts",
        list_contacts,
        "List contacts",
        ContactPage,
        query=(
            *_PAGE,
            ("tag", "only contacts with this tag"),
            ("status", "only contacts with this status"),
            ("email", "the contact with this email"),
        ),
    ),
    Endpoint(
        "POST",
        "/v1/mail/contacts/upsert",
        upsert_contact,
        "Create a contact, or update the one with this email",
        ContactUpsertResult,
        body=ContactCreate,
    ),
    Endpoint(
        "POST",
        "/v1/mail/contacts/import",
        import_contacts,
        "Import contacts from JSON or CSV (upsert by email)",
        ImportResult,
        content_types=(JSON, CSV),
        large_body=True,
    ),
    Endpoint("GET", "/v1/mail/contacts/{id}", get_contact, "Get a contact", Contact),
    Endpoint(
        "PATCH",
        "/v1/mail/contacts/{id}",
        update_contact,
        "Update a contact",
        Contact,
        body=ContactUpdate,
    ),
    Endpoint("DELETE", "/v1/mail/contacts/{id}", delete_contact, "Delete a contact", Deleted),
    Endpoint(
        "POST",
        "/v1/mail/campaigns",
        create_campaign,
        "Create a campaign",
        Campaign,
        status=201,
        body=CampaignCreate,
    ),
    Endpoint(
        "GET", "/v1/mail/campaigns", list_campaigns, "List campaigns", CampaignPage, query=_PAGE
    ),
    Endpoint("GET", "/v1/mail/campaigns/{id}", get_campaign, "Get a campaign", Campaign),
    Endpoint(
        "PATCH",
        "/v1/mail/campaigns/{id}",
        update_campaign,
        "Update a draft campaign",
        Campaign,
        body=CampaignUpdate,
    ),
    Endpoint(
        "DELETE", "/v1/mail/campaigns/{id}", delete_campaign, "Delete a draft campaign", Deleted
    ),
    Endpoint(
        "POST",
        "/v1/mail/campaigns/{id}/send",
        send_campaign,
        "Send a draft campaign to its audience",
        SendResult,
        price=PER_RECIPIENT,
    ),
    Endpoint(
        "POST",
        "/v1/mail/campaigns/{id}/cancel",
        cancel_campaign,
        "Stop a sending campaign; delivered emails are charged, the rest released",
        CampaignStats,
    ),
    Endpoint(
        "POST",
        "/v1/mail/campaigns/{id}/pause",
        pause_campaign,
        "Pause a sending campaign: nothing more goes out until it is resumed",
        CampaignStats,
    ),
    Endpoint(
        "POST",
        "/v1/mail/campaigns/{id}/resume",
        resume_campaign,
        "Resume a paused campaign where it stopped",
        CampaignStats,
    ),
    Endpoint(
        "GET",
        "/v1/mail/campaigns/{id}/stats",
        campaign_stats,
        "Delivery counts and cost of a campaign",
        CampaignStats,
    ),
    Endpoint(
        "POST",
        "/v1/mail/webhooks",
        create_webhook,
        "Create a webhook endpoint (its signing secret is shown once)",
        Webhook,
        status=201,
        body=WebhookCreate,
    ),
    Endpoint("GET", "/v1/mail/webhooks", list_webhooks, "List webhook endpoints", WebhookPage),
    Endpoint("GET", "/v1/mail/webhooks/{id}", get_webhook, "Get a webhook endpoint", Webhook),
    Endpoint(
        "PATCH",
        "/v1/mail/webhooks/{id}",
        update_webhook,
        "Change a webhook endpoint (or rotate its secret)",
        Webhook,
        body=WebhookUpdate,
    ),
    Endpoint(
        "DELETE", "/v1/mail/webhooks/{id}", delete_webhook, "Delete a webhook endpoint", Deleted
    ),
    Endpoint(
        "POST",
        "/v1/mail/webhooks/{id}/test",
        test_webhook,
        "Send a test event to the endpoint",
        WebhookTestQueued,
        status=202,
    ),
    Endpoint(
        "GET",
        "/v1/mail/webhooks/{id}/deliveries",
        webhook_deliveries,
        "Recent delivery attempts of the endpoint",
        WebhookDeliveryPage,
        query=(("limit", "how many (at most 200)"),),
    ),
    Endpoint(
        "POST",
        "/v1/mail/webhooks/{id}/deliveries/{delivery}/replay",
        replay_delivery,
        "Deliver a finished delivery again",
        Deleted,
        status=202,
    ),
    Endpoint(
        "POST",
        "/v1/mail/inbound",
        inbound_report,
        "Apply a raw bounce (RFC 3464 DSN) or complaint (ARF) report",
        FeedbackResult,
        content_types=("message/rfc822", "text/plain"),
        large_body=True,
    ),
    Endpoint("GET", "/v1/wallet", get_wallet, "The wallet: balance, available, open holds", Wallet),
    Endpoint(
        "GET", "/v1/pricing", get_pricing, "Every endpoint and its price", PriceList, auth=False
    ),
    Endpoint(
        "GET",
        "/v1/health",
        get_health,
        "This process: its roles, whether its database answers (else 503), its work",
        Health,
        auth=False,
        also=((503, "The database does not answer (same body)"),),
    ),
]

_decoders: dict[Any, msgspec.json.Decoder[Any]] = {}


def decoder(body_type: Any) -> msgspec.json.Decoder[Any]:
    """One decoder per body type, built once."""
    if body_type not in _decoders:
        _decoders[body_type] = msgspec.json.Decoder(body_type)
    return _decoders[body_type]
