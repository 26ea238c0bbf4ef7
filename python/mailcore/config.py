"""Settings: one frozen Struct, read from ``mailcore.toml`` and ``MAILCORE_*`` variables.

Precedence, lowest first: the defaults below, the TOML file (``MAILCORE_CONFIG`` or
``./mailcore.toml``), then environment variables named ``MAILCORE_<FIELD>``.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import msgspec

from .errors import ValidationError


def parse_nameserver(entry: str, default_port: int = 53) -> tuple[str, int]:
    """``"IP"``, ``"IP:port"`` or ``"[IPv6]:port"`` as ``(address, port)``.

    Raises :class:`ValidationError` for anything else (host names included).
    """
    text = entry.strip()
    host, port_text = text, None
    if text.startswith("["):  # [IPv6] or [IPv6]:port
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            host = ""
        port_text = rest[1:] if rest else None
    elif text.count(":") == 1:  # IPv4:port; a bare IPv6 address has several colons
        host, port_text = text.split(":")
    try:
        address = str(ipaddress.ip_address(host))
    except ValueError:
        address = ""
    port = default_port
    if port_text is not None:
        port = int(port_text) if port_text.isdigit() else 0
    if not address or not (0 < port < 65536):
        raise ValidationError(
            f"bad DNS server {entry!r}: expected IP, IP:port or [IPv6]:port",
            field="dns_nameservers",
        )
    return address, port


class DkimKey(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A sending domain's DKIM key (``[dkim."example.com"]`` in mailcore.toml)."""

    selector: str
    private_key_file: str
    algorithm: str = "rsa-sha256"  # or "ed25519-sha256"


class RelayRoute(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One of several relays (``[[relays]]`` in mailcore.toml, in failover order).

    A message goes to the first relay whose ``from_domains`` match its from-address domain
    (empty: any domain; ``*.example.com`` matches the subdomains) and is up; when it is
    down, to the next matching one.
    """

    url: str
    name: str = ""
    from_domains: tuple[str, ...] = ()
    connections: int = 0  # 0: smtp_connections
    messages_per_connection: int = 0  # 0: the setting of the same name
    rate: float = 0.0  # messages per second; 0: no limit


class DomainLimits(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Limits for mail to one receiving domain (``[domains."gmail.com"]``): the rate
    applies whichever way mail leaves; connections only to its MX hosts (direct delivery)."""

    rate: float = 0.0  # messages per second; 0: no limit
    connections: int = 0  # 0: direct_connections
    messages_per_connection: int = 0  # 0: the setting of the same name


DEFAULT_PIPELINE_DEPTH = 64
"""Messages per pipelined batch on a connection (``Settings.pipeline_depth``)."""


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
    # Recipients leased and not yet recorded, at most: what a crash can send twice. Room
    # for four claimed batches: the next is claimed and rendered while the connections
    # send the ones before and their results are committed (with two, the connections
    # went idle a quarter of the time, waiting for a commit to free room).
    max_in_flight: int = 2_000
    result_flush_seconds: float = 0.2
    # A sender renews its leases every third of this; a node that dies stops renewing, and
    # after this long other nodes (PostgreSQL) take over what it held.
    lease_seconds: float = 60.0
    # Seconds to wait before each retry of a deferred (4xx) recipient; after the last one,
    # or once the first attempt is older than retry_max_age_seconds, the recipient fails.
    retry_schedule: tuple[int, ...] = (60, 300, 1800, 7200, 21600)
    retry_max_age_seconds: float = 5 * 86_400
    # How mail leaves: "relay" (smtp_url, or the [[relays]] table with routing by
    # from-domain and failover) or "direct" (MX lookup per recipient domain).
    delivery: Literal["relay", "direct"] = "relay"
    relays: tuple[RelayRoute, ...] = ()
    # Messages per second to the relay at smtp_url (0: no limit), messages sent on one
    # connection before it is replaced, and seconds an idle connection is kept open.
    smtp_rate: float = 0.0
    messages_per_connection: int = 1_000
    smtp_idle_seconds: float = 30.0
    # Messages pipelined on one connection per write (PIPELINING, RFC 2920; with BDAT,
    # RFC 3030), and about how many bytes of content at most; 1: one message at a time.
    # With DATA each message still costs one round trip: the depth is how many go in one
    # batch (one hand-off to the engine's pipeline, one wake-up of the event loop).
    pipeline_depth: int = DEFAULT_PIPELINE_DEPTH
    pipeline_bytes: int = 256 * 1024
    # Direct delivery: connections per receiving domain, and TLS to its MX hosts
    # ("opportunistic": STARTTLS when offered, certificates not checked, as MTAs do;
    # "required": verified STARTTLS or the recipient is deferred).
    direct_connections: int = 4
    # The name we give in EHLO; empty: this machine's fully qualified name.
    helo_name: str = ""
    direct_tls: Literal["opportunistic", "required"] = "opportunistic"
    # MX hosts resolving to loopback or private addresses are skipped unless allowed
    # (local testing), so a hostile DNS answer cannot aim our sender inside our network.
    direct_allow_private: bool = False
    # Per receiving-domain limits, from the TOML file: [domains."gmail.com"] rate = 50.
    domains: dict[str, DomainLimits] = msgspec.field(default_factory=dict)
    # After a destination throttles (421, 4.7.x), its connections and rate are halved;
    # every quiet period of this many seconds gives some back.
    throttle_recover_seconds: float = 30.0
    # A message that would wait longer than this for its rate-limit slot is deferred
    # (durably, without counting an attempt) instead of being held in memory.
    throttle_max_wait_seconds: float = 2.0
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
    # Direct delivery (MX lookup instead of a relay). The DNS servers to ask, as "IP" or
    # "IP:port" ("[IPv6]:port"); empty: the system resolver (/etc/resolv.conf). Env:
    # MAILCORE_DNS_NAMESERVERS="127.0.0.1:5353,9.9.9.9". IP addresses only: a resolver
    # named by host name would need DNS to be found.
    dns_nameservers: tuple[str, ...] = ()
    # The whole lookup of one name (all its retries) must finish within this; a timeout
    # defers the domain's recipients (4.4.3) rather than bouncing them.
    dns_timeout_seconds: float = 5.0
    # The port direct delivery connects to on each MX host. 25 in production; tests point
    # it at a free port so local SMTP servers on 127.0.0.x stand in for the MX hosts.
    mx_port: int = 25

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
        if self.messages_per_connection <= 0 or self.direct_connections <= 0:
            raise ValidationError(
                "messages_per_connection and direct_connections must be positive",
                field="messages_per_connection",
            )
        if self.pipeline_depth <= 0 or self.pipeline_bytes <= 0:
            raise ValidationError(
                "pipeline_depth and pipeline_bytes must be positive", field="pipeline_depth"
            )
        if self.smtp_idle_seconds <= 0 or self.retry_max_age_seconds <= 0:
            raise ValidationError(
                "smtp_idle_seconds and retry_max_age_seconds must be positive",
                field="smtp_idle_seconds",
            )
        if self.import_batch_size <= 0:
            raise ValidationError("import_batch_size must be positive", field="import_batch_size")
        if not (0 < self.mx_port < 65536):
            raise ValidationError("mx_port must be between 1 and 65535", field="mx_port")
        if not self.dns_timeout_seconds > 0:
            raise ValidationError(
                "dns_timeout_seconds must be positive", field="dns_timeout_seconds"
            )
        for entry in self.dns_nameservers:
            parse_nameserver(entry)  # raises ValidationError naming the bad entry

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
                if name in ("retry_schedule", "webhook_retry_schedule", "dns_nameservers"):
                    values[name] = [part.strip() for part in env[key].split(",") if part.strip()]
        values.update(overrides)
        try:
            return msgspec.convert(values, cls, strict=False)
        except msgspec.ValidationError as exc:
            raise ValidationError(f"invalid setting: {exc}") from exc


__all__ = ["DkimKey", "DomainLimits", "RelayRoute", "Settings", "parse_nameserver"]
