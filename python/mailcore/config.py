"""Settings: one frozen Struct, read from ``mailcore.toml`` and ``MAILCORE_*`` variables.

Precedence, lowest first: the defaults below, the TOML file (``MAILCORE_CONFIG`` or
``./mailcore.toml``), then environment variables named ``MAILCORE_<FIELD>``.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec

from .errors import ValidationError


class DkimKey(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A sending domain's DKIM key (``[dkim."example.com"]`` in mailcore.toml)."""

    selector: str
    private_key_file: str
    algorithm: str = "rsa-sha256"  # or "ed25519-sha256"


class Settings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    # sqlite:///PATH (embedded, one node) or postgresql://USER@HOST:PORT/DB (several nodes).
    database_url: str = "sqlite:///./mailcore.db"
    # PostgreSQL: connections per process (API requests, the sender and the webhook
    # dispatcher share them).
    database_pool_size: int = 10
    smtp_url: str = "smtp://127.0.0.1:2525"
    public_url: str = "http://127.0.0.1:8025"
    # Signs tracking and unsubscribe tokens. Empty: a random key is made once and kept
    # in the database, so links stay valid across restarts.
    secret_key: str = ""
    host: str = "127.0.0.1"
    port: int = msgspec.field(default=8025)
    # Request bodies above these sizes get 413 before they are read whole.
    max_body_bytes: int = 1_048_576
    max_import_bytes: int = 256 * 1_048_576
    # Contacts are written in groups of this many rows per transaction during imports.
    import_batch_size: int = 5_000
    # Sending: SMTP connections to the relay, recipients leased and rendered per batch
    # (also the bound on duplicates after a crash), results committed per group.
    smtp_connections: int = 8
    send_batch_size: int = 500
    result_group_size: int = 500
    # Recipients leased and not yet recorded, at most: what a crash can send twice.
    max_in_flight: int = 1_000
    result_flush_seconds: float = 0.2
    # A sender renews its leases every third of this; a node that dies stops renewing, and
    # after this long other nodes (PostgreSQL) take over what it held.
    lease_seconds: float = 60.0
    # Seconds to wait before each retry of a deferred (4xx) recipient; after the last one
    # the recipient fails.
    retry_schedule: tuple[int, ...] = (60, 300, 1800, 7200, 21600)
    # VERP return paths (bounces+TOKEN@bounce_domain) so asynchronous bounces find their
    # email; empty: the envelope sender is the campaign's from address. The inbound SMTP
    # listener for them (and for feedback-loop reports) runs when the port is not 0.
    bounce_domain: str = ""
    inbound_smtp_port: int = 0
    # DKIM signing per sending domain (the from-address domain), from the TOML file only.
    dkim: dict[str, DkimKey] = msgspec.field(default_factory=dict)
    # The domain of Message-IDs; empty: the campaign's from-address domain.
    message_id_domain: str = ""
    # Webhooks: seconds before each retry after the first attempt (the Standard Webhooks
    # schedule), the request timeout, deliveries in parallel, and private targets
    # (loopback, RFC 1918, link-local) refused unless allowed (local development, tests).
    webhook_retry_schedule: tuple[int, ...] = (5, 300, 1800, 7200, 18000, 36000, 36000)
    webhook_timeout_seconds: float = 15.0
    webhook_concurrency: int = 16
    webhook_allow_private: bool = False
    webhook_disable_after_seconds: float = 5 * 86_400
    # A claimed delivery not recorded within this time (its dispatcher died) is claimed again.
    webhook_lease_seconds: float = 120.0
    # Idempotency-Key answers are replayed for this long.
    idempotency_ttl_seconds: int = 86_400

    def __post_init__(self) -> None:
        if not (0 < self.port < 65536):
            raise ValidationError("port must be between 1 and 65535", field="port")
        if self.max_body_bytes <= 0 or self.max_import_bytes <= 0:
            raise ValidationError("body limits must be positive", field="max_body_bytes")
        if self.smtp_connections <= 0 or self.send_batch_size <= 0 or self.result_group_size <= 0:
            raise ValidationError("sending sizes must be positive", field="smtp_connections")
        if self.max_in_flight < self.send_batch_size:
            raise ValidationError(
                "max_in_flight must be at least send_batch_size", field="max_in_flight"
            )
        if self.lease_seconds <= 0:
            raise ValidationError("lease_seconds must be positive", field="lease_seconds")
        if self.database_pool_size <= 0:
            raise ValidationError("database_pool_size must be positive", field="database_pool_size")
        if self.import_batch_size <= 0:
            raise ValidationError("import_batch_size must be positive", field="import_batch_size")

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        **overrides: Any,
    ) -> Settings:
        """Build settings from the TOML file, the environment and explicit overrides."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        config_path = (
            Path(path) if path is not None else Path(env.get("MAILCORE_CONFIG", "mailcore.toml"))
        )
        if config_path.is_file():
            with config_path.open("rb") as f:
                values.update(tomllib.load(f))
        elif path is not None:
            raise ValidationError(f"config file {config_path} does not exist", field="config")
        for name in cls.__struct_fields__:
            key = f"MAILCORE_{name.upper()}"
            if key in env:
                values[name] = env[key]
                if name in ("retry_schedule", "webhook_retry_schedule"):
                    values[name] = [part for part in env[key].split(",") if part.strip()]
        values.update(overrides)
        try:
            return msgspec.convert(values, cls, strict=False)
        except msgspec.ValidationError as exc:
            raise ValidationError(f"invalid setting: {exc}") from exc


__all__ = ["DkimKey", "Settings"]
