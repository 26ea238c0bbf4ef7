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


class ContactChanges(Record, frozen=True):
    """Rows written and removed since a revision, for the audience index to catch up."""

    revision: int
    seqs: list[int]
    statuses: list[str]
    tags: list[list[str]]
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


class Store(abc.ABC):
    """One interface for the embedded SQLite store and (later) PostgreSQL."""

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect and apply pending migrations."""

    @abc.abstractmethod
    async def close(self) -> None: ...

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
