"""Persistence: one interface (:class:`Store`), an embedded SQLite implementation."""

from __future__ import annotations

from urllib.parse import urlsplit

from ..errors import ValidationError
from .base import (
    CONTACT_STATUS_CODES,
    UNKNOWN_STATUS_CODE,
    AccountRow,
    CampaignRow,
    ContactChanges,
    ContactFilter,
    ContactRow,
    DeliveryOutcome,
    DeliveryRow,
    DeliveryWork,
    EndpointRow,
    EventRecord,
    HoldRow,
    IdempotentReplay,
    PackedRows,
    RecipientResult,
    RecipientWork,
    SendRow,
    Store,
    UpsertOutcome,
    WalletRow,
)
from .sqlite import SqliteStore


def sqlite_path(url: str) -> str:
    """``sqlite:///./x.db`` → ``./x.db``; ``sqlite:////abs/x.db`` → ``/abs/x.db``;
    ``sqlite:///:memory:`` → ``:memory:``."""
    parts = urlsplit(url)
    if parts.scheme != "sqlite" or parts.netloc:
        raise ValidationError(f"not a sqlite URL: {url!r}", field="database_url")
    path = parts.path[1:] if parts.path.startswith("/") else parts.path
    if not path:
        raise ValidationError("the sqlite URL has no path", field="database_url")
    return path


def store_from_url(url: str) -> Store:
    scheme = urlsplit(url).scheme
    if scheme == "sqlite":
        return SqliteStore(sqlite_path(url))
    raise ValidationError(
        f"unsupported database URL scheme {scheme!r} (expected sqlite:///PATH)",
        field="database_url",
    )


__all__ = [
    "CONTACT_STATUS_CODES",
    "UNKNOWN_STATUS_CODE",
    "AccountRow",
    "CampaignRow",
    "ContactChanges",
    "ContactFilter",
    "ContactRow",
    "DeliveryOutcome",
    "DeliveryRow",
    "DeliveryWork",
    "EndpointRow",
    "EventRecord",
    "HoldRow",
    "IdempotentReplay",
    "PackedRows",
    "RecipientResult",
    "RecipientWork",
    "SendRow",
    "SqliteStore",
    "Store",
    "UpsertOutcome",
    "WalletRow",
    "sqlite_path",
    "store_from_url",
]
