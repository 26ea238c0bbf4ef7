"""Persistence: one interface (:class:`Store`); embedded SQLite (the default, one node) and
PostgreSQL (several nodes sharing one database), chosen by the database URL's scheme."""

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


def store_from_url(url: str, *, pool_size: int = 10) -> Store:
    """``sqlite:///PATH`` → :class:`SqliteStore`; ``postgresql://…`` → ``PostgresStore``
    (imported only then: psycopg is the optional ``postgres`` extra) with a pool of
    ``pool_size`` connections."""
    scheme = urlsplit(url).scheme
    if scheme == "sqlite":
        return SqliteStore(sqlite_path(url))
    if scheme in ("postgresql", "postgres"):
        try:
            from .postgres import PostgresStore
        except ImportError as exc:
            raise ValidationError(str(exc), field="database_url") from None
        return PostgresStore(url, pool_size=pool_size)
    raise ValidationError(
        f"unsupported database URL scheme {scheme!r} "
        "(expected sqlite:///PATH or postgresql://USER@HOST:PORT/DATABASE)",
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
