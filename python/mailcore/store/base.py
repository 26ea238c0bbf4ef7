"""The storage interface: rows, filters and the abstract :class:`Store`.

The store persists and queries; it does not validate business rules (the resource
modules do) except those only a transaction can keep: uniqueness, the wallet's
never-negative available balance and a hold resolved at most once. Every method that
touches an account's data takes that account's id and scopes its queries by it.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any

import msgspec


class Row(msgspec.Struct, kw_only=True):
    """A mutable row (the resource modules fill in and change fields before writing)."""


class Record(msgspec.Struct, kw_only=True, frozen=True):
    """An immutable value read from or handed to the store."""


class AccountRow(Record, frozen=True):
    id: str
    name: str
    created_at: str


class ContactRow(Row):
    seq: int
    id: str
    account_id: str
    email: str
    first_name: str | None
    last_name: str | None
    tags: list[str]
    custom_fields: dict[str, Any]
    status: str
    created_at: str
    updated_at: str


class ContactFilter(Record, frozen=True):
    tag: str | None = None
    status: str | None = None
    email: str | None = None


# Contact status -> the audience index's status code (one byte).
CONTACT_STATUS_CODES: dict[str, int] = {
    "subscribed": 0,
    "unsubscribed": 1,
    "bounced": 2,
    "complained": 3,
}
# Code of a status missing from CONTACT_STATUS_CODES (matched by no audience query).
UNKNOWN_STATUS_CODE = 255


class PackedRows(Record, frozen=True):
    """Contact rows packed for ``AudienceIndex.upsert_packed``, as SQLite's ``group_concat``
    returns them: ``seqs`` and ``statuses`` are decimal numbers separated by ``,`` (a status
    as its code in :data:`CONTACT_STATUS_CODES`), ``tags_json`` each row's stored JSON array
    of tags, one per line."""

    seqs: bytes
    statuses: bytes
    tags_json: bytes


class ContactChanges(Record, frozen=True):
    """Rows written and removed since a revision, for the audience index to catch up: the
    written rows in chunks (a whole account is read in chunks of bounded size)."""

    revision: int
    chunks: list[PackedRows]
    removed: list[int]


class UpsertOutcome(Record, frozen=True):
    created: int
    updated: int
    # (index in the batch, the error) of rows the merge refused; the others were written.
    rejected: list[tuple[int, Exception]]


class CampaignRow(Row):
    seq: int
    id: str
    account_id: str
    status: str
    definition: bytes  # the campaign's msgspec-encoded definition (JSON)
    audience_count: int
    created_at: str
    updated_at: str
    sent_at: str | None


class HoldRow(Record, frozen=True):
    id: str
    account_id: str
    amount: int
    status: str  # open | settled
    posted: int | None
    reference: str | None
    created_at: str
    resolved_at: str | None


class WalletRow(Record, frozen=True):
    balance: int
    held: int
    holds: list[HoldRow]


# -- sending ----------------------------------------------------------------------


class SendRow(Record, frozen=True):
    campaign_id: str
    account_id: str
    hold_id: str
    audience_count: int
    price_micros: int
    status: str  # sending | paused | cancelling | sent | cancelled
    last_error: str | None
    started_at: str
    completed_at: str | None
    charged_micros: int | None


class RecipientWork(Record, frozen=True):
    """A claimed recipient with the contact's current fields (None status: deleted)."""

    contact_seq: int
    attempts: int
    email: str | None
    first_name: str | None
    last_name: str | None
    custom_fields: dict[str, Any]
    contact_status: str | None
    first_attempt_at: float | None = None  # unix time of the first attempt, if any


class RecipientResult(Record, frozen=True):
    campaign_id: str
    contact_seq: int
    state: str  # delivered | deferred | bounced | failed | suppressed | queued (requeue)
    reply: str | None = None
    next_attempt_at: float | None = None
    attempted: bool = True  # False: handed back untried (relay down); no attempt counted
    attempted_at: float | None = None  # unix time of this attempt (kept if it is the first)


class IdempotentReplay(Record, frozen=True):
    status: int
    body: bytes


# -- webhooks ---------------------------------------------------------------------


class EndpointRow(Row):
    seq: int
    id: str
    account_id: str
    url: str
    events: list[str]
    enabled: bool
    disabled_reason: str | None
    secret_version: int
    created_at: str
    updated_at: str
    batch_size: int = 1


class EventRecord(Record, frozen=True):
    id: str
    account_id: str
    type: str
    payload: bytes  # the whole event body, JSON
    created_at: str


class DeliveryWork(Record, frozen=True):
    delivery_seq: int
    endpoint_id: str
    url: str
    secret_version: int
    event_id: str
    payload: bytes
    attempts: int
    batch_size: int = 1


class DeliveryOutcome(Record, frozen=True):
    delivery_seq: int
    endpoint_id: str
    succeeded: bool
    status: int | None
    error: str | None
    next_attempt_at: float | None  # None with succeeded False: failed for good
    disable_endpoint: str | None = None  # a reason to disable the endpoint (410, days failing)


class DeliveryRow(Record, frozen=True):
    delivery_seq: int
    event_id: str
    event_type: str
    state: str
    attempts: int
    last_status: int | None
    last_error: str | None
    next_attempt_at: float | None


class Store(abc.ABC):
    """One interface for the embedded SQLite store and PostgreSQL (several nodes)."""

    kind: str = "sqlite"  # or "postgresql" (health reports it)
    # Set by open(): the schema version found, and the version after migrating.
    migrated_from: int = 0
    schema_version: int = 0

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect and apply pending migrations."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def ping(self) -> bool:
        """Whether the database answers now (health checks); never raises."""

    # -- meta ----------------------------------------------------------------------
    @abc.abstractmethod
    async def get_or_set_meta(self, key: str, default: str) -> str:
        """Return the stored value of ``key``, storing ``default`` first if absent."""

    # -- accounts ------------------------------------------------------------------
    @abc.abstractmethod
    async def create_account(self, account: AccountRow, key_hash: str, key_prefix: str) -> None: ...

    @abc.abstractmethod
    async def add_api_key(
        self, account_id: str, key_hash: str, key_prefix: str, now: str
    ) -> None: ...

    @abc.abstractmethod
    async def account_for_key(self, key_hash: str) -> str | None: ...

    @abc.abstractmethod
    async def get_account(self, account_id: str) -> AccountRow | None: ...

    # -- wallet --------------------------------------------------------------------
    @abc.abstractmethod
    async def credit(self, account_id: str, micros: int, memo: str | None, now: str) -> int:
        """Add (or, negative, remove) funds; returns the new balance. Raises
        InsufficientFunds when a removal would take ``available`` below zero."""

    @abc.abstractmethod
    async def wallet(self, account_id: str) -> WalletRow: ...

    @abc.abstractmethod
    async def place_hold(
        self, account_id: str, hold_id: str, micros: int, reference: str | None, now: str
    ) -> HoldRow:
        """Reserve ``micros`` of the available balance, or raise InsufficientFunds."""

    @abc.abstractmethod
    async def settle_hold(
        self, account_id: str, hold_id: str, post_micros: int, now: str
    ) -> HoldRow:
        """Post ``post_micros`` (≤ the hold) and release the rest, exactly once: a second
        call raises HoldAlreadyResolved; an unknown hold raises NotFound."""

    @abc.abstractmethod
    async def ledger(self, account_id: str) -> list[tuple[str, int, str | None]]:
        """(kind, amount, hold id) of every ledger entry, oldest first."""

    # -- contacts ------------------------------------------------------------------
    @abc.abstractmethod
    async def insert_contact(self, row: ContactRow) -> ContactRow:
        """Insert; raises DuplicateContact (with the existing id) on a taken email."""

    @abc.abstractmethod
    async def get_contact(self, account_id: str, contact_id: str) -> ContactRow | None: ...

    @abc.abstractmethod
    async def list_contacts(
        self, account_id: str, flt: ContactFilter, after_seq: int, limit: int
    ) -> list[ContactRow]: ...

    @abc.abstractmethod
    async def update_contact(self, row: ContactRow) -> ContactRow:
        """Replace a contact's fields (matched by account and seq)."""

    @abc.abstractmethod
    async def delete_contact(self, account_id: str, contact_id: str) -> bool: ...

    @abc.abstractmethod
    async def upsert_contacts(
        self, account_id: str, rows: Sequence[ContactRow], merge: Any
    ) -> UpsertOutcome:
        """Insert rows whose email is new; for each existing email (or a repeat within the
        batch) call ``merge(existing, incoming) -> ContactRow`` and store the result. A
        merge that raises ValidationError rejects that row only. One transaction."""

    @abc.abstractmethod
    async def unsubscribe_contact(
        self, contact_seq: int, now: str, campaign_seq: int | None = None
    ) -> bool:
        """A subscribed contact becomes unsubscribed (from a signed link: no account in
        hand, the contact's number is the key). True if it changed."""

    @abc.abstractmethod
    async def contact_changes(self, account_id: str, since: int) -> ContactChanges: ...

    # -- campaigns -----------------------------------------------------------------
    @abc.abstractmethod
    async def insert_campaign(self, row: CampaignRow) -> CampaignRow: ...

    @abc.abstractmethod
    async def get_campaign(self, account_id: str, campaign_id: str) -> CampaignRow | None: ...

    @abc.abstractmethod
    async def list_campaigns(
        self, account_id: str, after_seq: int, limit: int
    ) -> list[CampaignRow]: ...

    @abc.abstractmethod
    async def update_campaign(self, row: CampaignRow, expect_status: str) -> CampaignRow:
        """Replace a campaign's fields if its status is still ``expect_status``, else raise
        InvalidState."""

    @abc.abstractmethod
    async def delete_campaign(
        self, account_id: str, campaign_id: str, expect_status: str
    ) -> bool: ...

    # -- sending -------------------------------------------------------------------
    @abc.abstractmethod
    async def start_send(
        self,
        account_id: str,
        campaign_id: str,
        hold_id: str,
        price_micros: int,
        contact_seqs: Sequence[int],
        now: str,
        links: Sequence[str] = (),
    ) -> SendRow:
        """One transaction: the draft becomes ``sending`` (else InvalidState), a hold of
        len(contact_seqs) × price is placed (else InsufficientFunds, and nothing changes),
        and the plan (one queued recipient per contact) is written."""

    @abc.abstractmethod
    async def get_send(self, account_id: str, campaign_id: str) -> SendRow | None: ...

    @abc.abstractmethod
    async def record_engagement(
        self,
        campaign_seq: int,
        contact_seq: int,
        kind: str,
        link_id: int | None,
        user_agent: str | None,
        now: str,
    ) -> str | None:
        """Record an open or a click from a signed link (and its event). Returns the
        redirect target of a click (from the link table), "" for an open, None when the
        campaign, contact or link does not exist."""

    @abc.abstractmethod
    async def apply_feedback(
        self,
        campaign_id: str,
        contact_seq: int,
        kind: str,
        detail: str | None,
        now: str,
        account_id: str | None = None,
    ) -> bool:
        """A bounce or complaint that arrived after delivery (a DSN, an ARF report):
        recorded with its event; a hard bounce or a complaint also changes the contact's
        status so later sends suppress it. ``account_id``: only within that account.
        False if the campaign did not send to that contact."""

    @abc.abstractmethod
    async def campaign_seq_to_id(self, campaign_seq: int) -> str | None: ...

    @abc.abstractmethod
    async def feedback_counts(self, campaign_id: str) -> dict[str, int]:
        """kind (hard_bounce, soft_bounce, complaint) -> distinct contacts."""

    @abc.abstractmethod
    async def engagement_counts(self, campaign_id: str) -> dict[str, tuple[int, int]]:
        """kind -> (unique contacts, total)."""

    @abc.abstractmethod
    async def active_sends(self) -> list[SendRow]:
        """Sends of every account that are ``sending``, ``paused`` or ``cancelling`` (the
        sender's view: a paused send takes no new work and hands back what it holds)."""

    @abc.abstractmethod
    async def claim_recipients(
        self, campaign_id: str, limit: int, now: float, lease_until: float, owner: str = ""
    ) -> list[RecipientWork]:
        """Lease up to ``limit`` recipients that are queued, or deferred and due (SQLite
        also takes leases that expired; a shared store leaves those to
        :meth:`recover_leases`, which live senders call with their heartbeat); they
        become ``sending`` until ``lease_until``, held by ``owner`` (the node's id, so it
        can renew them). Two concurrent claims, from any nodes, never return the same
        recipient."""

    @abc.abstractmethod
    async def record_results(self, results: Sequence[RecipientResult], now: str) -> None:
        """Write a group of per-recipient outcomes in one transaction. Only rows still
        ``sending`` change, so a late result never overwrites a cancel."""

    @abc.abstractmethod
    async def recover_leases(self, now: float) -> int:
        """At a sender's start-up and with each of its heartbeats: make what stopped
        senders held claimable again: expired leases, and (SQLite, whose senders
        all run on its machine) those of senders known to have stopped; a live sender's
        leases are its own. Returns how many."""

    @abc.abstractmethod
    async def renew_leases(self, owner: str, lease_until: float) -> int:
        """Extend every lease ``owner`` holds to ``lease_until`` (a live node's heartbeat:
        its work is not taken over while it runs). Returns how many."""

    @abc.abstractmethod
    async def set_send_error(self, campaign_id: str, error: str | None) -> None: ...

    @abc.abstractmethod
    async def recipient_counts(self, campaign_id: str) -> dict[str, int]: ...

    @abc.abstractmethod
    async def next_attempt_at(self, campaign_id: str) -> float | None:
        """The earliest time a deferred recipient of the campaign is due, if any."""

    @abc.abstractmethod
    async def finish_send_if_done(self, campaign_id: str, now: str) -> SendRow | None:
        """If no recipient is queued, sending or deferred: post the hold for delivered ×
        price, release the rest, mark the campaign sent (or cancelled). Exactly once:
        returns the finished send the one time it happens, else None."""

    @abc.abstractmethod
    async def cancel_send(self, account_id: str, campaign_id: str, now: str) -> SendRow:
        """Queued and deferred recipients become ``cancelled``; the send ``cancelling``
        until what is in flight is recorded. InvalidState unless it is sending or paused."""

    @abc.abstractmethod
    async def pause_send(self, account_id: str, campaign_id: str, now: str) -> SendRow:
        """``sending`` → ``paused`` (the campaign too): no recipient is claimed until it is
        resumed; what is in flight is recorded as it completes. InvalidState otherwise."""

    @abc.abstractmethod
    async def resume_send(self, account_id: str, campaign_id: str, now: str) -> SendRow:
        """``paused`` → ``sending`` (the campaign too). InvalidState otherwise."""

    # -- idempotency keys ----------------------------------------------------------
    @abc.abstractmethod
    async def idempotency_begin(
        self, account_id: str, key: str, fingerprint: str, now: float, ttl: float
    ) -> IdempotentReplay | None:
        """Claim ``key`` for a request, or return the stored answer of the first request
        with it. IdempotencyKeyReused if the key came with another request; Conflict if the
        first request is still running. Keys older than ``ttl`` seconds are forgotten."""

    @abc.abstractmethod
    async def idempotency_finish(
        self, account_id: str, key: str, status: int, body: bytes
    ) -> None: ...

    @abc.abstractmethod
    async def idempotency_abandon(self, account_id: str, key: str) -> None:
        """Forget a key whose request failed, so a retry runs again."""

    # -- webhooks ------------------------------------------------------------------
    @abc.abstractmethod
    async def insert_endpoint(self, row: EndpointRow) -> EndpointRow: ...

    @abc.abstractmethod
    async def get_endpoint(self, account_id: str, endpoint_id: str) -> EndpointRow | None: ...

    @abc.abstractmethod
    async def list_endpoints(self, account_id: str) -> list[EndpointRow]: ...

    @abc.abstractmethod
    async def update_endpoint(self, row: EndpointRow) -> EndpointRow: ...

    @abc.abstractmethod
    async def delete_endpoint(self, account_id: str, endpoint_id: str) -> bool: ...

    @abc.abstractmethod
    async def emit(self, events: Sequence[EventRecord], now: float, only: str | None = None) -> int:
        """Write events to the outbox with one delivery per subscribed, enabled endpoint
        (``only``: just that endpoint). Returns the deliveries queued."""

    @abc.abstractmethod
    async def claim_deliveries(
        self, limit: int, now: float, lease_until: float
    ) -> list[DeliveryWork]: ...

    @abc.abstractmethod
    async def record_deliveries(self, outcomes: Sequence[DeliveryOutcome], now: float) -> None: ...

    @abc.abstractmethod
    async def endpoint_failing_since(self, endpoint_id: str) -> float | None:
        """When the endpoint's current run of failures began (None: it is not failing)."""

    @abc.abstractmethod
    async def list_deliveries(
        self, account_id: str, endpoint_id: str, limit: int
    ) -> list[DeliveryRow]: ...

    @abc.abstractmethod
    async def replay_delivery(
        self, account_id: str, endpoint_id: str, delivery_seq: int, now: float
    ) -> bool: ...
