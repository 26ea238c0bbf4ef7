"""mailcore: an embeddable, high-throughput email-campaign engine with a Rust core.

Embedding::

    from mailcore import Mailcore, Settings

    async with Mailcore.open(Settings.load()) as mc:
        created = await mc.accounts.create("Acme", credit_micros=10_000_000)
        acme = mc.account(created.account_id)
        await acme.contacts.create(ContactCreate(email="sarah@example.com", tags=["news"]))
"""

from __future__ import annotations

from .config import Settings
from .errors import (
    Conflict,
    DuplicateContact,
    HoldAlreadyResolved,
    IdempotencyKeyReused,
    InsufficientFunds,
    InvalidJSON,
    InvalidState,
    MailcoreError,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    TemplateInvalid,
    Unauthorized,
    UnsupportedMediaType,
    ValidationError,
)
from .facade import AccountScope, Mailcore
from .models import (
    AccountCreated,
    Audience,
    Campaign,
    CampaignCreate,
    CampaignPage,
    CampaignUpdate,
    Contact,
    ContactCreate,
    ContactPage,
    ContactUpdate,
    ContactUpsertResult,
    Content,
    Hold,
    HoldResolution,
    ImportResult,
    ImportRowError,
    Sender,
    Wallet,
)

__version__ = "0.1.0"

from .node import tune_sender_process

__all__ = [
    "AccountCreated",
    "AccountScope",
    "Audience",
    "Campaign",
    "CampaignCreate",
    "CampaignPage",
    "CampaignUpdate",
    "Conflict",
    "Contact",
    "ContactCreate",
    "ContactPage",
    "ContactUpdate",
    "ContactUpsertResult",
    "Content",
    "DuplicateContact",
    "Hold",
    "HoldAlreadyResolved",
    "HoldResolution",
    "IdempotencyKeyReused",
    "ImportResult",
    "ImportRowError",
    "InsufficientFunds",
    "InvalidJSON",
    "InvalidState",
    "Mailcore",
    "MailcoreError",
    "MethodNotAllowed",
    "NotFound",
    "PayloadTooLarge",
    "Sender",
    "Settings",
    "TemplateInvalid",
    "Unauthorized",
    "UnsupportedMediaType",
    "ValidationError",
    "Wallet",
    "tune_sender_process",
]
