"""The PostgreSQL store: several mailcore processes on several machines share one database.

PostgreSQL is the coordination engine; there is no cluster protocol of our own:

* **Work is claimed, not assigned.** A sender claims a batch of recipients with
  ``SELECT … FOR UPDATE SKIP LOCKED`` and leases them (``state = 'sending'``,
  ``lease_until``, ``lease_owner``): two nodes never claim the same row, and neither waits
  for the other. A live node renews its leases (:meth:`PostgresStore.renew_leases`); a
  node that dies stops renewing, its leases expire, and the survivors claim those
  recipients again. A starting node leaves live nodes' leases alone
  (:meth:`PostgresStore.recover_leases` hands back only expired ones). Webhook deliveries
  are claimed the same way.
* **Finishing happens once.** Settling a finished send locks its ``sends`` row
  (``FOR UPDATE``); a second node that saw the same send finish waits for the lock, then
  finds the send no longer ``sending`` and does nothing.
* **Money: row locks, not serializable transactions.** Every transaction that moves money
  (credit, hold, settle, a send's start and its settlement) first locks the account's
  ``wallets`` row with ``SELECT … FOR UPDATE``, then checks and writes. Concurrent holds
  on one wallet therefore queue on that lock and each sees the balance the previous one
  left: exactly as many succeed as the funds cover, none fails spuriously, and nothing
  has to be retried. SERIALIZABLE would give the same guarantee only by aborting the
  losers of every race with a serialization failure (64 concurrent holds: up to 63
  aborts, each retried), and the lock is held only for a few short statements. The
  CHECK constraints on ``wallets`` (``held >= 0``, ``balance - held >= 0``) stay as the
  last line of defence. A hold is resolved at most once by a guarded
  ``UPDATE … WHERE status = 'open'`` under the same wallet lock.
* **Contact revisions commit in order.** Every contact write first locks the account's
  ``contact_revisions`` row and takes the next revision under that lock, so revisions
  commit in the order they were handed out; an audience index (on any node) that reads
  the revision and the rows changed since in one REPEATABLE READ snapshot never misses a
  write. The same lock orders the email-uniqueness check before the insert.

Lock order, to stay free of deadlocks: the account's contact-revision row, then contacts;
a ``sends`` row, then recipients, then the wallet, then holds and campaigns. A deadlock or
serialization failure (never expected, but PostgreSQL may report one) retries the whole
transaction a few times.

psycopg's async API needs asyncio, and mailcore runs on Trio: the store uses sync psycopg
3 with a ``psycopg_pool.ConnectionPool``, each call in a worker thread
(``anyio.to_thread.run_sync``) behind a CapacityLimiter the size of the pool, so the event
loop never blocks and threads never queue for a connection.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit

import anyio
import anyio.to_thread
import msgspec

try:
    import psycopg
    from psycopg import errors as pg_errors
    from psycopg.adapt import Loader
    from psycopg_pool import ConnectionPool, PoolTimeout
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(
        "the PostgreSQL store needs psycopg 3 and psycopg-pool: pip install 'mailcore[postgres]'"
    ) from exc

from ..errors import (
    Conflict,
    DuplicateContact,
    HoldAlreadyResolved,
    IdempotencyKeyReused,
    InsufficientFunds,
    InvalidState,
    NotFound,
    StoreUnavailable,
    ValidationError,
)
from ..webhooks.events import (
    CampaignCompletedData,
    CampaignSentData,
    ContactEventData,
    EmailEventData,
)
from ..webhooks.events import record as record_event
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
from .rows import claimed_work, decode_fields
from .schema import POSTGRES_MIGRATIONS

T = TypeVar("T")
Conn = psycopg.Connection[tuple[Any, ...]]

log = logging.getLogger("mailcore.store.postgres")

_encode = msgspec.json.Encoder().encode
_decode_tags = msgspec.json.Decoder(list[str]).decode

# Any constant works: every node migrating at once queues on this advisory lock.
_MIGRATION_LOCK = 0x6D61696C636F7265  # "mailcore"
# Transactions that lose a deadlock or a serialization check are run again this often.
_RETRIES = 5

_CONTACT_COLUMNS = (
    "seq, id, account_id, email, first_name, last_name, tags, custom_fields, status, "
    "created_at, updated_at"
)
_HOLD_COLUMNS = "id, account_id, amount, status, posted, reference, created_at, resolved_at"
_CAMPAIGN_COLUMNS = (
    "seq, id, account_id, status, definition, audience_count, created_at, updated_at, sent_at"
)
_SEND_COLUMNS = (
    "campaign_id, account_id, hold_id, audience_count, price_micros, status, last_error, "
    "started_at, completed_at, charged_micros"
)
_ENDPOINT_COLUMNS = (
    "seq, id, account_id, url, events, enabled, disabled_reason, secret_version, "
    "created_at, updated_at, batch_size"
)
_CONTACT_CHANGES_SQL = (
    # The rows written since a revision, as one row of packed columns (see PackedRows):
    # no Python object per contact. The three aggregates share one order.
    "SELECT convert_to(string_agg(seq::text, ',' ORDER BY seq), 'UTF8'), "
    "convert_to(string_agg((CASE status "
    + " ".join(f"WHEN '{name}' THEN {code}" for name, code in CONTACT_STATUS_CODES.items())
    + f" ELSE {UNKNOWN_STATUS_CODE} END)::text, ',' ORDER BY seq), 'UTF8'), "
    "convert_to(string_agg(tags::text, E'\\n' ORDER BY seq), 'UTF8') FROM contacts "
    "WHERE account_id = %s AND rev > %s AND rev <= %s"
)
# What a claim takes, each kind picked on its own so that every condition is an index
# condition on recipients_state (campaign_id, state, next_attempt_at): the scan stops at
# the batch, however the statistics stand. One query with ORDER BY contact_seq over every
# open state (the first design) was planned, once statistics had been analysed while a
# campaign was nearly sent, as a bitmap scan of every queued row plus a sort: a claim
# of 500 then read and sorted all 100,000 queued rows of the next campaign (seconds per
# claim, measured with three senders). Expired leases are not picked here: every 'sending'
# row version a campaign ever had sits in that part of the index until vacuum, so each
# claim would walk them all; live nodes' heartbeats put expired leases back in the queue
# (recover_leases) instead. Parameters: (campaign_id, now, limit) and (campaign_id, limit).
_PICK_DUE = (
    "SELECT ctid FROM recipients WHERE campaign_id = %s AND state = 'deferred' "
    "AND next_attempt_at <= %s LIMIT %s FOR UPDATE SKIP LOCKED"
)
_PICK_QUEUED = (
    "SELECT ctid FROM recipients WHERE campaign_id = %s AND state = 'queued' "
    "LIMIT %s FOR UPDATE SKIP LOCKED"
)
# The picked rows are updated by the address of the row versions the picks locked (no
# one else can change them before this transaction ends), with index scans off for that
# one statement so that it is a TID scan whatever the statistics say. A campaign newer
# than the statistics is estimated at one row: "contact_seq = ANY(…)", or the ctids with
# index scans allowed, were planned as a walk of every recipient of the campaign, so each
# claim cost as much as the campaign was large (40-140 ms per 500 at 30,000-50,000).
_TIDS_ONLY = "SET LOCAL enable_indexscan = off; SET LOCAL enable_bitmapscan = off"
_INDEXES_AGAIN = "SET LOCAL enable_indexscan = on; SET LOCAL enable_bitmapscan = on"
_CLAIM = (
    "UPDATE recipients SET state = 'sending', lease_until = %s, lease_owner = %s "
    "WHERE ctid = ANY(%s::tid[]) AND campaign_id = %s "
    "RETURNING contact_seq, attempts, first_attempt_at"
)
# A LIMIT over an equality the statistics think matches many rows invites a sequential
# scan that "stops early"; a new campaign's rows are at the end of the table, so it
# would read the whole table. Index scans only, in these transactions.
_INDEX_SCANS_ONLY = "SET LOCAL enable_seqscan = off"
# The results of a group, one primary-key lookup per result. "IS TRUE" keeps the state out
# of the index search: as an index condition it got this planned, for a campaign newer
# than the statistics, as a walk of recipients_state through every recipient in flight,
# per result (40 ms per 500).
_RECORD = (
    "UPDATE recipients r SET state = u.state, reply = u.reply, "
    "next_attempt_at = u.next_attempt_at, attempts = r.attempts + u.attempted, "
    "lease_until = NULL, updated_at = %s, "
    "first_attempt_at = coalesce(r.first_attempt_at, u.attempted_at) "
    "FROM unnest(%s::text[], %s::bigint[], %s::text[], %s::text[], "
    "%s::float8[], %s::int[], %s::float8[]) "
    "AS u(campaign_id, contact_seq, state, reply, next_attempt_at, attempted, "
    "attempted_at) "
    "WHERE r.campaign_id = u.campaign_id AND r.contact_seq = u.contact_seq "
    "AND (r.state = 'sending') IS TRUE"
)


def _has_open(conn: Conn, campaign_id: str) -> bool:
    """Whether any recipient of the campaign is still open (queued, deferred, sending):
    one probe per state, each an index condition (a LIMIT 1 over the three may be planned
    as a scan through every delivered row). Needs _INDEX_SCANS_ONLY in the transaction."""
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM recipients WHERE campaign_id = %s AND state = "
        "'queued') OR EXISTS (SELECT 1 FROM recipients WHERE campaign_id = %s AND "
        "state = 'deferred') OR EXISTS (SELECT 1 FROM recipients WHERE campaign_id = "
        "%s AND state = 'sending')",
        (campaign_id, campaign_id, campaign_id),
    ).fetchone()
    return row is not None and bool(row[0])


class _JsonbAsBytes(Loader):
    """JSONB comes back as its JSON text (bytes), decoded by msgspec into our own types
    (or handed as is to the audience index), instead of psycopg's generic json.loads."""

    def load(self, data: Any) -> bytes:
        return bytes(data)


def _json(value: Any) -> str:
    return _encode(value).decode()


def _contact(r: Sequence[Any]) -> ContactRow:
    return ContactRow(
        seq=r[0],
        id=r[1],
        account_id=r[2],
        email=r[3],
        first_name=r[4],
        last_name=r[5],
        tags=_decode_tags(r[6]),
        custom_fields=decode_fields(r[7]),
        status=r[8],
        created_at=r[9],
        updated_at=r[10],
    )


def _campaign(r: Sequence[Any]) -> CampaignRow:
    return CampaignRow(
        seq=r[0],
        id=r[1],
        account_id=r[2],
        status=r[3],
        definition=bytes(r[4]),
        audience_count=r[5],
        created_at=r[6],
        updated_at=r[7],
        sent_at=r[8],
    )


def _hold(r: Sequence[Any]) -> HoldRow:
    return HoldRow(
        id=r[0],
        account_id=r[1],
        amount=r[2],
        status=r[3],
        posted=r[4],
        reference=r[5],
        created_at=r[6],
        resolved_at=r[7],
    )


def _send(r: Sequence[Any]) -> SendRow:
    return SendRow(
        campaign_id=r[0],
        account_id=r[1],
        hold_id=r[2],
        audience_count=r[3],
        price_micros=r[4],
        status=r[5],
        last_error=r[6],
        started_at=r[7],
        completed_at=r[8],
        charged_micros=r[9],
    )


def _endpoint(r: Sequence[Any]) -> EndpointRow:
    return EndpointRow(
        seq=r[0],
        id=r[1],
        account_id=r[2],
        url=r[3],
        events=_decode_tags(r[4]),
        enabled=bool(r[5]),
        disabled_reason=r[6],
        secret_version=r[7],
        created_at=r[8],
        updated_at=r[9],
        batch_size=r[10],
    )


# -- money: every function below runs inside the caller's transaction ---------------------


def _lock_wallet(conn: Conn, account_id: str) -> tuple[int, int]:
    """Lock the account's wallet row for the rest of the transaction; (balance, held).
    See the module docstring for why a row lock."""
    row = conn.execute(
        "SELECT balance, held FROM wallets WHERE account_id = %s FOR UPDATE", (account_id,)
    ).fetchone()
    if row is None:
        raise NotFound(f"no account {account_id}")
    return int(row[0]), int(row[1])


def _place_hold(
    conn: Conn, account_id: str, hold_id: str, micros: int, reference: str | None, now: str
) -> HoldRow:
    balance, held = _lock_wallet(conn, account_id)
    if balance - held < micros:
        raise InsufficientFunds(
            "the wallet's available balance does not cover the hold", required_micros=micros
        )
    conn.execute("UPDATE wallets SET held = held + %s WHERE account_id = %s", (micros, account_id))
    conn.execute(
        "INSERT INTO holds (id, account_id, amount, status, reference, created_at) "
        "VALUES (%s, %s, %s, 'open', %s, %s)",
        (hold_id, account_id, micros, reference, now),
    )
    conn.execute(
        "INSERT INTO ledger (account_id, kind, amount, hold_id, memo, created_at) "
        "VALUES (%s, 'hold', %s, %s, %s, %s)",
        (account_id, micros, hold_id, reference, now),
    )
    return HoldRow(
        id=hold_id,
        account_id=account_id,
        amount=micros,
        status="open",
        posted=None,
        reference=reference,
        created_at=now,
        resolved_at=None,
    )


def _settle(conn: Conn, account_id: str, hold_id: str, post_micros: int, now: str) -> HoldRow:
    """Post part of a hold and release the rest. Under the wallet lock the guarded UPDATE
    resolves the hold at most once: a second settlement finds it no longer open."""
    _lock_wallet(conn, account_id)
    row = conn.execute(
        "UPDATE holds SET status = 'settled', posted = %s, resolved_at = %s "
        "WHERE id = %s AND account_id = %s AND status = 'open' AND amount >= %s "
        f"RETURNING {_HOLD_COLUMNS}",
        (post_micros, now, hold_id, account_id, post_micros),
    ).fetchone()
    if row is None:
        existing = conn.execute(
            "SELECT status, amount FROM holds WHERE id = %s AND account_id = %s",
            (hold_id, account_id),
        ).fetchone()
        if existing is None:
            raise NotFound(f"no hold {hold_id}")
        if existing[0] != "open":
            raise HoldAlreadyResolved(f"hold {hold_id} is already settled")
        raise InvalidState(
            f"cannot post {post_micros} micros of a hold of {existing[1]}", hold_id=hold_id
        )
    hold = _hold(row)
    conn.execute(
        "UPDATE wallets SET balance = balance - %s, held = held - %s WHERE account_id = %s",
        (post_micros, hold.amount, account_id),
    )
    conn.execute(
        "INSERT INTO ledger (account_id, kind, amount, hold_id, memo, created_at) "
        "VALUES (%s, 'post', %s, %s, NULL, %s), (%s, 'release', %s, %s, NULL, %s)",
        (
            account_id,
            -post_micros,
            hold_id,
            now,
            account_id,
            hold.amount - post_micros,
            hold_id,
            now,
        ),
    )
    return hold


# -- the outbox ------------------------------------------------------------------------


def _emit(conn: Conn, events: Sequence[EventRecord], now: float, only: str | None = None) -> int:
    """Each event once, and a pending delivery for every enabled endpoint of its account
    subscribed to its type; inside the caller's transaction."""
    endpoints: dict[str, list[tuple[str, list[str]]]] = {}
    wanted: list[tuple[EventRecord, list[str]]] = []
    for event in events:
        subscribed = endpoints.get(event.account_id)
        if subscribed is None:
            subscribed = endpoints[event.account_id] = [
                (r[0], _decode_tags(r[1]))
                for r in conn.execute(
                    "SELECT id, events FROM webhook_endpoints WHERE account_id = %s AND enabled",
                    (event.account_id,),
                )
            ]
        targets = [
            endpoint_id
            for endpoint_id, types in subscribed
            if (only is None and event.type in types) or endpoint_id == only
        ]
        if targets:  # nobody listens: no outbox row
            wanted.append((event, targets))
    if not wanted:
        return 0
    seqs: dict[str, int] = dict(
        conn.execute(
            "INSERT INTO events (id, account_id, type, payload, created_at) "
            "SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::bytea[], %s::text[]) "
            "RETURNING id, seq",
            (
                [e.id for e, _ in wanted],
                [e.account_id for e, _ in wanted],
                [e.type for e, _ in wanted],
                [e.payload for e, _ in wanted],
                [e.created_at for e, _ in wanted],
            ),
        ).fetchall()
    )
    event_seqs = [seqs[e.id] for e, targets in wanted for _ in targets]
    endpoint_ids = [t for _, targets in wanted for t in targets]
    conn.execute(
        "INSERT INTO webhook_deliveries (event_seq, endpoint_id, state, next_attempt_at) "
        "SELECT e, w, 'pending', %s FROM unnest(%s::bigint[], %s::text[]) AS u(e, w)",
        (now, event_seqs, endpoint_ids),
    )
    return len(endpoint_ids)


def _listening(conn: Conn, account_id: str, types: Sequence[str]) -> bool:
    for (events,) in conn.execute(
        "SELECT events FROM webhook_endpoints WHERE account_id = %s AND enabled", (account_id,)
    ):
        if set(_decode_tags(events)) & set(types):
            return True
    return False


def _emit_email_events(conn: Conn, results: Sequence[RecipientResult], now: str) -> None:
    """email.delivered / email.bounced for recorded results, in the same transaction."""
    by_campaign: dict[str, list[RecipientResult]] = {}
    for r in results:
        if r.state in ("delivered", "bounced", "failed"):
            by_campaign.setdefault(r.campaign_id, []).append(r)
    for campaign_id, group in by_campaign.items():
        row = conn.execute(
            "SELECT account_id FROM sends WHERE campaign_id = %s", (campaign_id,)
        ).fetchone()
        if row is None or not _listening(conn, row[0], ("email.delivered", "email.bounced")):
            continue
        account_id = row[0]
        contacts: dict[int, tuple[str, str]] = {
            seq: (cid, email)
            for seq, cid, email in conn.execute(
                "SELECT seq, id, email FROM contacts WHERE account_id = %s AND seq = ANY(%s)",
                (account_id, [r.contact_seq for r in group]),
            )
        }
        records = []
        for r in group:
            cid, email = contacts.get(r.contact_seq, (None, None))
            data = EmailEventData(
                campaign_id=campaign_id,
                contact_id=cid,
                email=email,
                email_id=f"{campaign_id}.{r.contact_seq}",
                smtp_response=r.reply,
                bounce_type=None
                if r.state == "delivered"
                else ("hard" if r.state == "bounced" else "soft"),
            )
            kind = "email.delivered" if r.state == "delivered" else "email.bounced"
            records.append(record_event(account_id, kind, data, now))
        _emit(conn, records, time.time())


# -- contacts --------------------------------------------------------------------------


def _bump_revision(conn: Conn, account_id: str, n: int) -> int:
    """Reserve ``n`` revisions for an account and return the first. The upsert locks the
    account's revision row until commit, so revisions commit in the order they are taken;
    ``n = 0`` only takes the lock (call it first in every contact write: lock order)."""
    row = conn.execute(
        "INSERT INTO contact_revisions (account_id, rev) VALUES (%s, %s) "
        "ON CONFLICT (account_id) DO UPDATE SET rev = contact_revisions.rev + excluded.rev "
        "RETURNING rev",
        (account_id, n),
    ).fetchone()
    assert row is not None
    return int(row[0]) - n + 1


def _existing_email(conn: Conn, account_id: str, email: str) -> str | None:
    row = conn.execute(
        "SELECT id FROM contacts WHERE account_id = %s AND email = %s", (account_id, email)
    ).fetchone()
    return None if row is None else str(row[0])


_INSERT_CONTACT = (
    "INSERT INTO contacts (id, account_id, email, first_name, last_name, tags, custom_fields, "
    "status, created_at, updated_at, rev) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
    "RETURNING seq"
)
_UPDATE_CONTACT = (
    "UPDATE contacts SET email = %s, first_name = %s, last_name = %s, tags = %s, "
    "custom_fields = %s, status = %s, updated_at = %s, rev = %s "
    "WHERE account_id = %s AND seq = %s"
)


def _copy_text(value: Any) -> str:
    """One field of COPY's text format."""
    if value is None:
        return "\\N"
    text = str(value)
    if any(c in text for c in "\\\t\n\r"):
        text = (
            text.replace("\\", "\\\\")
            .replace("\t", "\\t")
            .replace("\n", "\\n")
            .replace("\r", "\\r")
        )
    return text


def _copy_rows(rows: Iterable[Sequence[Any]]) -> bytes:
    return "".join("\t".join(_copy_text(v) for v in row) + "\n" for row in rows).encode()


def _conninfo(url: str) -> str:
    """Check a ``postgresql://`` (or ``postgres://``) URL, which libpq takes as it is; a
    clear error for anything else."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres"):
        raise ValidationError(f"not a PostgreSQL URL: {url!r}", field="database_url")
    if not parts.path.strip("/") and not parts.query:
        raise ValidationError(
            "the PostgreSQL URL names no database (postgresql://USER@HOST:PORT/DATABASE)",
            field="database_url",
        )
    return url


class PostgresStore(Store):
    """The store on PostgreSQL; see the module docstring for how nodes coordinate."""

    kind = "postgresql"

    def __init__(self, url: str, *, pool_size: int = 10, connect_timeout: float = 10.0) -> None:
        self.url = _conninfo(url)
        self.pool_size = pool_size
        self.connect_timeout = connect_timeout
        self._pool: ConnectionPool[Conn] | None = None
        self._limiter = anyio.CapacityLimiter(pool_size)

    # -- plumbing ------------------------------------------------------------------

    @staticmethod
    def _configure(conn: Conn) -> None:
        conn.adapters.register_loader("jsonb", _JsonbAsBytes)

    def _where(self) -> str:
        parts = urlsplit(self.url)
        return f"{parts.hostname or 'localhost'}:{parts.port or 5432}{parts.path}"

    async def open(self) -> None:
        def setup() -> None:
            # One plain connection first: a wrong address or password fails at once with
            # PostgreSQL's own reason (the pool would retry quietly until its timeout).
            try:
                first = psycopg.connect(
                    self.url, autocommit=True, connect_timeout=max(1, int(self.connect_timeout))
                )
            except psycopg.OperationalError as exc:
                reason = (str(exc).strip().splitlines() or ["no reason given"])[0]
                raise StoreUnavailable(
                    f"cannot connect to PostgreSQL at {self._where()}: {reason}"
                ) from None
            with first:
                self._configure(first)
                self._migrate(first)
            pool: ConnectionPool[Conn] = ConnectionPool(
                self.url,
                min_size=1,
                max_size=self.pool_size,
                kwargs={"autocommit": True},
                configure=self._configure,
                open=False,
                name="mailcore",
            )
            try:
                pool.open(wait=True, timeout=self.connect_timeout)
            except PoolTimeout:
                pool.close()
                raise StoreUnavailable(
                    f"cannot connect to PostgreSQL at {self._where()} "
                    f"within {self.connect_timeout:g} s"
                ) from None
            self._pool = pool

        await anyio.to_thread.run_sync(setup)

    def _migrate(self, conn: Conn) -> None:
        """Apply pending migrations in one transaction under an advisory lock, so nodes
        started together migrate once."""
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
            current = int(row[0] or 0) if row else 0
            self.migrated_from = current
            for version, script in enumerate(POSTGRES_MIGRATIONS, start=1):
                if version <= current:
                    continue
                conn.execute(script.encode())  # several statements: no parameters
                conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (version,))
            self.schema_version = max(current, len(POSTGRES_MIGRATIONS))

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await anyio.to_thread.run_sync(pool.close)

    def _run(self, fn: Callable[[Conn], T], snapshot: bool) -> T:
        pool = self._pool
        assert pool is not None, "store is not open"
        for attempt in range(1, _RETRIES + 1):
            try:
                with pool.connection() as conn, conn.transaction():
                    if snapshot:
                        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                    return fn(conn)
            except (pg_errors.DeadlockDetected, pg_errors.SerializationFailure) as exc:
                if attempt == _RETRIES:
                    raise
                log.info("retrying a transaction (%s)", type(exc).__name__)
                time.sleep(random.uniform(0.0, 0.02 * attempt))
        raise AssertionError("unreachable")

    async def _tx(self, fn: Callable[[Conn], T], *, snapshot: bool = False) -> T:
        """Run ``fn`` in one transaction on a pooled connection, in a worker thread. Not
        abandoned on cancellation: a transaction, once started, commits or rolls back
        before the caller sees the cancel (as the SQLite store's writes do)."""
        return await anyio.to_thread.run_sync(self._run, fn, snapshot, limiter=self._limiter)

    async def ping(self) -> bool:
        def check() -> bool:
            pool = self._pool
            if pool is None:
                return False
            try:
                with pool.connection(timeout=5) as conn:
                    conn.execute("SELECT 1").fetchone()
            except Exception:
                return False
            return True

        # Abandoned on cancellation: a health check must answer even if the database hangs.
        with anyio.move_on_after(6):
            return await anyio.to_thread.run_sync(check, abandon_on_cancel=True)
        return False

    # -- meta ----------------------------------------------------------------------

    async def get_or_set_meta(self, key: str, default: str) -> str:
        def tx(conn: Conn) -> str:
            conn.execute(
                "INSERT INTO meta (key, value) VALUES (%s, %s) ON CONFLICT (key) DO NOTHING",
                (key, default),
            )
            row = conn.execute("SELECT value FROM meta WHERE key = %s", (key,)).fetchone()
            assert row is not None
            return str(row[0])

        return await self._tx(tx)

    # -- accounts ------------------------------------------------------------------

    async def create_account(self, account: AccountRow, key_hash: str, key_prefix: str) -> None:
        def tx(conn: Conn) -> None:
            conn.execute(
                "INSERT INTO accounts (id, name, created_at) VALUES (%s, %s, %s)",
                (account.id, account.name, account.created_at),
            )
            conn.execute("INSERT INTO wallets (account_id) VALUES (%s)", (account.id,))
            conn.execute(
                "INSERT INTO api_keys (key_hash, account_id, prefix, created_at) "
                "VALUES (%s, %s, %s, %s)",
                (key_hash, account.id, key_prefix, account.created_at),
            )

        await self._tx(tx)

    async def add_api_key(self, account_id: str, key_hash: str, key_prefix: str, now: str) -> None:
        def tx(conn: Conn) -> None:
            if (
                conn.execute("SELECT 1 FROM accounts WHERE id = %s", (account_id,)).fetchone()
                is None
            ):
                raise NotFound(f"no account {account_id}")
            conn.execute(
                "INSERT INTO api_keys (key_hash, account_id, prefix, created_at) "
                "VALUES (%s, %s, %s, %s)",
                (key_hash, account_id, key_prefix, now),
            )

        await self._tx(tx)

    async def account_for_key(self, key_hash: str) -> str | None:
        def q(conn: Conn) -> str | None:
            row = conn.execute(
                "SELECT account_id FROM api_keys WHERE key_hash = %s AND revoked_at IS NULL",
                (key_hash,),
            ).fetchone()
            return None if row is None else str(row[0])

        return await self._tx(q)

    async def get_account(self, account_id: str) -> AccountRow | None:
        def q(conn: Conn) -> AccountRow | None:
            row = conn.execute(
                "SELECT id, name, created_at FROM accounts WHERE id = %s", (account_id,)
            ).fetchone()
            return None if row is None else AccountRow(id=row[0], name=row[1], created_at=row[2])

        return await self._tx(q)

    # -- wallet --------------------------------------------------------------------

    async def credit(self, account_id: str, micros: int, memo: str | None, now: str) -> int:
        def tx(conn: Conn) -> int:
            balance, held = _lock_wallet(conn, account_id)
            if balance - held + micros < 0:
                raise InsufficientFunds("the available balance is smaller than the debit")
            conn.execute(
                "UPDATE wallets SET balance = balance + %s WHERE account_id = %s",
                (micros, account_id),
            )
            conn.execute(
                "INSERT INTO ledger (account_id, kind, amount, hold_id, memo, created_at) "
                "VALUES (%s, %s, %s, NULL, %s, %s)",
                (account_id, "credit" if micros >= 0 else "debit", micros, memo, now),
            )
            return balance + micros

        return await self._tx(tx)

    async def wallet(self, account_id: str) -> WalletRow:
        def q(conn: Conn) -> WalletRow:
            row = conn.execute(
                "SELECT balance, held FROM wallets WHERE account_id = %s", (account_id,)
            ).fetchone()
            if row is None:
                raise NotFound(f"no account {account_id}")
            holds = conn.execute(
                f"SELECT {_HOLD_COLUMNS} FROM holds "
                "WHERE account_id = %s AND status = 'open' ORDER BY seq",
                (account_id,),
            ).fetchall()
            return WalletRow(balance=row[0], held=row[1], holds=[_hold(h) for h in holds])

        # One snapshot: the balance, the held total and the open holds agree.
        return await self._tx(q, snapshot=True)

    async def place_hold(
        self, account_id: str, hold_id: str, micros: int, reference: str | None, now: str
    ) -> HoldRow:
        return await self._tx(
            lambda conn: _place_hold(conn, account_id, hold_id, micros, reference, now)
        )

    async def settle_hold(
        self, account_id: str, hold_id: str, post_micros: int, now: str
    ) -> HoldRow:
        return await self._tx(lambda conn: _settle(conn, account_id, hold_id, post_micros, now))

    async def ledger(self, account_id: str) -> list[tuple[str, int, str | None]]:
        def q(conn: Conn) -> list[tuple[str, int, str | None]]:
            rows = conn.execute(
                "SELECT kind, amount, hold_id FROM ledger WHERE account_id = %s ORDER BY seq",
                (account_id,),
            ).fetchall()
            return [(r[0], r[1], r[2]) for r in rows]

        return await self._tx(q)

    # -- contacts ------------------------------------------------------------------

    async def insert_contact(self, row: ContactRow) -> ContactRow:
        def tx(conn: Conn) -> ContactRow:
            rev = _bump_revision(conn, row.account_id, 1)  # first: the account's write lock
            existing = _existing_email(conn, row.account_id, row.email)
            if existing is not None:
                raise DuplicateContact(
                    f"a contact with email {row.email} exists", existing_id=existing
                )
            inserted = conn.execute(
                _INSERT_CONTACT,
                (
                    row.id,
                    row.account_id,
                    row.email,
                    row.first_name,
                    row.last_name,
                    _json(row.tags),
                    _json(row.custom_fields),
                    row.status,
                    row.created_at,
                    row.updated_at,
                    rev,
                ),
            ).fetchone()
            assert inserted is not None
            row.seq = int(inserted[0])
            return row

        return await self._tx(tx)

    async def get_contact(self, account_id: str, contact_id: str) -> ContactRow | None:
        def q(conn: Conn) -> ContactRow | None:
            r = conn.execute(
                f"SELECT {_CONTACT_COLUMNS} FROM contacts WHERE account_id = %s AND id = %s",
                (account_id, contact_id),
            ).fetchone()
            return None if r is None else _contact(r)

        return await self._tx(q)

    async def list_contacts(
        self, account_id: str, flt: ContactFilter, after_seq: int, limit: int
    ) -> list[ContactRow]:
        clauses = ["account_id = %s", "seq > %s"]
        params: list[Any] = [account_id, after_seq]
        if flt.status is not None:
            clauses.append("status = %s")
            params.append(flt.status)
        if flt.email is not None:
            clauses.append("email = %s")
            params.append(flt.email)
        if flt.tag is not None:
            clauses.append("tags @> %s::jsonb")
            params.append(_json([flt.tag]))
        sql = (
            f"SELECT {_CONTACT_COLUMNS} FROM contacts WHERE {' AND '.join(clauses)} "
            "ORDER BY seq LIMIT %s"
        )
        params.append(limit)

        def q(conn: Conn) -> list[ContactRow]:
            return [_contact(r) for r in conn.execute(sql, params)]

        return await self._tx(q)

    async def update_contact(self, row: ContactRow) -> ContactRow:
        def tx(conn: Conn) -> ContactRow:
            rev = _bump_revision(conn, row.account_id, 1)
            existing = _existing_email(conn, row.account_id, row.email)
            if existing is not None and existing != row.id:
                raise DuplicateContact(
                    f"a contact with email {row.email} exists", existing_id=existing
                )
            cur = conn.execute(
                _UPDATE_CONTACT,
                (
                    row.email,
                    row.first_name,
                    row.last_name,
                    _json(row.tags),
                    _json(row.custom_fields),
                    row.status,
                    row.updated_at,
                    rev,
                    row.account_id,
                    row.seq,
                ),
            )
            if cur.rowcount != 1:
                raise NotFound(f"no contact {row.id}")
            return row

        return await self._tx(tx)

    async def delete_contact(self, account_id: str, contact_id: str) -> bool:
        def tx(conn: Conn) -> bool:
            _bump_revision(conn, account_id, 0)  # the lock first (lock order)
            row = conn.execute(
                "DELETE FROM contacts WHERE account_id = %s AND id = %s RETURNING seq",
                (account_id, contact_id),
            ).fetchone()
            if row is None:
                return False
            rev = _bump_revision(conn, account_id, 1)
            conn.execute(
                "INSERT INTO contact_deletions (account_id, seq, rev) VALUES (%s, %s, %s)",
                (account_id, row[0], rev),
            )
            return True

        return await self._tx(tx)

    async def upsert_contacts(
        self,
        account_id: str,
        rows: Sequence[ContactRow],
        merge: Callable[[ContactRow, ContactRow], ContactRow],
    ) -> UpsertOutcome:
        def tx(conn: Conn) -> UpsertOutcome:
            # The account's write lock before reading what exists: no other import can
            # insert one of these emails between the read and the write.
            _bump_revision(conn, account_id, 0)
            existing: dict[str, ContactRow] = {}
            for r in conn.execute(
                f"SELECT {_CONTACT_COLUMNS} FROM contacts "
                "WHERE account_id = %s AND email = ANY(%s)",
                (account_id, list({r.email for r in rows})),
            ):
                found = _contact(r)
                existing[found.email] = found
            created: dict[str, ContactRow] = {}
            updated: dict[str, ContactRow] = {}
            rejected: list[tuple[int, Exception]] = []
            for index, row in enumerate(rows):
                pending = created.get(row.email) or updated.get(row.email)
                old = pending or existing.get(row.email)
                if old is None:
                    created[row.email] = row
                    continue
                try:
                    merged = merge(old, row)
                except ValidationError as exc:
                    rejected.append((index, exc))
                    continue
                (created if row.email in created else updated)[row.email] = merged
            base = _bump_revision(conn, account_id, len(created) + len(updated))
            if created:
                # COPY: the fastest way in; seqs follow the batch's order.
                with conn.cursor().copy(
                    "COPY contacts (id, account_id, email, first_name, last_name, tags, "
                    "custom_fields, status, created_at, updated_at, rev) FROM STDIN"
                ) as copy:
                    copy.write(
                        _copy_rows(
                            (
                                r.id,
                                account_id,
                                r.email,
                                r.first_name,
                                r.last_name,
                                _json(r.tags),
                                _json(r.custom_fields),
                                r.status,
                                r.created_at,
                                r.updated_at,
                                base + i,
                            )
                            for i, r in enumerate(created.values())
                        )
                    )
            base += len(created)
            if updated:
                ups = list(updated.values())
                conn.execute(
                    "UPDATE contacts c SET email = u.email, first_name = u.first_name, "
                    "last_name = u.last_name, tags = u.tags::jsonb, "
                    "custom_fields = u.custom_fields::jsonb, status = u.status, "
                    "updated_at = u.updated_at, rev = u.rev "
                    "FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::text[], %s::text[], "
                    "%s::text[], %s::text[], %s::text[], %s::bigint[]) "
                    "AS u(seq, email, first_name, last_name, tags, custom_fields, status, "
                    "updated_at, rev) "
                    "WHERE c.account_id = %s AND c.seq = u.seq",
                    (
                        [r.seq for r in ups],
                        [r.email for r in ups],
                        [r.first_name for r in ups],
                        [r.last_name for r in ups],
                        [_json(r.tags) for r in ups],
                        [_json(r.custom_fields) for r in ups],
                        [r.status for r in ups],
                        [r.updated_at for r in ups],
                        [base + i for i in range(len(ups))],
                        account_id,
                    ),
                )
            return UpsertOutcome(created=len(created), updated=len(updated), rejected=rejected)

        return await self._tx(tx)

    async def unsubscribe_contact(
        self, contact_seq: int, now: str, campaign_seq: int | None = None
    ) -> bool:
        def tx(conn: Conn) -> bool:
            row = conn.execute(
                "SELECT account_id FROM contacts WHERE seq = %s", (contact_seq,)
            ).fetchone()
            if row is None:
                return False
            account_id = row[0]
            rev = _bump_revision(conn, account_id, 1)
            # Guarded: of two concurrent unsubscribes, one changes the contact.
            changed = conn.execute(
                "UPDATE contacts SET status = 'unsubscribed', updated_at = %s, rev = %s "
                "WHERE seq = %s AND account_id = %s AND status = 'subscribed' "
                "RETURNING id, email",
                (now, rev, contact_seq, account_id),
            ).fetchone()
            if changed is None:
                # Nothing changed: give the revision back by rolling back.
                raise _Unchanged
            cid, email = changed
            campaign = conn.execute(
                "SELECT id FROM campaigns WHERE seq = %s AND account_id = %s",
                (campaign_seq, account_id),
            ).fetchone()
            data = ContactEventData(
                contact_id=cid, email=email, campaign_id=campaign[0] if campaign else None
            )
            if campaign is not None:
                conn.execute(
                    "INSERT INTO feedback (campaign_id, contact_seq, kind, created_at) "
                    "VALUES (%s, %s, 'unsubscribe', %s)",
                    (campaign[0], contact_seq, now),
                )
            _emit(conn, [record_event(account_id, "contact.unsubscribed", data, now)], time.time())
            return True

        try:
            return await self._tx(tx)
        except _Unchanged:
            return False

    async def contact_changes(self, account_id: str, since: int) -> ContactChanges:
        def q(conn: Conn) -> ContactChanges:
            row = conn.execute(
                "SELECT rev FROM contact_revisions WHERE account_id = %s", (account_id,)
            ).fetchone()
            revision = 0 if row is None else int(row[0])
            chunks: list[PackedRows] = []
            removed: list[int] = []
            if revision > since:
                packed = conn.execute(_CONTACT_CHANGES_SQL, (account_id, since, revision))
                seqs, statuses, tags_json = packed.fetchone() or (None, None, None)
                if seqs is not None:  # string_agg of no rows is NULL
                    chunks.append(PackedRows(seqs=seqs, statuses=statuses, tags_json=tags_json))
                removed = [
                    r[0]
                    for r in conn.execute(
                        "SELECT seq FROM contact_deletions "
                        "WHERE account_id = %s AND rev > %s AND rev <= %s",
                        (account_id, since, revision),
                    )
                ]
            return ContactChanges(revision=revision, chunks=chunks, removed=removed)

        # One REPEATABLE READ snapshot: the revision and the rows up to it agree.
        return await self._tx(q, snapshot=True)

    # -- campaigns -----------------------------------------------------------------

    async def insert_campaign(self, row: CampaignRow) -> CampaignRow:
        def tx(conn: Conn) -> CampaignRow:
            inserted = conn.execute(
                "INSERT INTO campaigns (id, account_id, status, definition, audience_count, "
                "created_at, updated_at, sent_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
                "RETURNING seq",
                (
                    row.id,
                    row.account_id,
                    row.status,
                    row.definition,
                    row.audience_count,
                    row.created_at,
                    row.updated_at,
                    row.sent_at,
                ),
            ).fetchone()
            assert inserted is not None
            row.seq = int(inserted[0])
            return row

        return await self._tx(tx)

    async def get_campaign(self, account_id: str, campaign_id: str) -> CampaignRow | None:
        def q(conn: Conn) -> CampaignRow | None:
            r = conn.execute(
                f"SELECT {_CAMPAIGN_COLUMNS} FROM campaigns WHERE account_id = %s AND id = %s",
                (account_id, campaign_id),
            ).fetchone()
            return None if r is None else _campaign(r)

        return await self._tx(q)

    async def list_campaigns(
        self, account_id: str, after_seq: int, limit: int
    ) -> list[CampaignRow]:
        def q(conn: Conn) -> list[CampaignRow]:
            return [
                _campaign(r)
                for r in conn.execute(
                    f"SELECT {_CAMPAIGN_COLUMNS} FROM campaigns "
                    "WHERE account_id = %s AND seq > %s ORDER BY seq LIMIT %s",
                    (account_id, after_seq, limit),
                )
            ]

        return await self._tx(q)

    async def update_campaign(self, row: CampaignRow, expect_status: str) -> CampaignRow:
        def tx(conn: Conn) -> CampaignRow:
            cur = conn.execute(
                "UPDATE campaigns SET status = %s, definition = %s, audience_count = %s, "
                "updated_at = %s, sent_at = %s "
                "WHERE account_id = %s AND id = %s AND status = %s",
                (
                    row.status,
                    row.definition,
                    row.audience_count,
                    row.updated_at,
                    row.sent_at,
                    row.account_id,
                    row.id,
                    expect_status,
                ),
            )
            if cur.rowcount != 1:
                _campaign_state_error(conn, row.account_id, row.id, expect_status)
            return row

        return await self._tx(tx)

    async def delete_campaign(self, account_id: str, campaign_id: str, expect_status: str) -> bool:
        def tx(conn: Conn) -> bool:
            cur = conn.execute(
                "DELETE FROM campaigns WHERE account_id = %s AND id = %s AND status = %s",
                (account_id, campaign_id, expect_status),
            )
            if cur.rowcount != 1:
                _campaign_state_error(conn, account_id, campaign_id, expect_status)
            return True

        return await self._tx(tx)

    # -- sending -------------------------------------------------------------------

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
        def tx(conn: Conn) -> SendRow:
            cur = conn.execute(
                "UPDATE campaigns SET status = 'sending', audience_count = %s, sent_at = %s, "
                "updated_at = %s WHERE account_id = %s AND id = %s AND status = 'draft'",
                (len(contact_seqs), now, now, account_id, campaign_id),
            )
            if cur.rowcount != 1:
                _campaign_state_error(conn, account_id, campaign_id, "draft")
            amount = len(contact_seqs) * price_micros
            _place_hold(conn, account_id, hold_id, amount, campaign_id, now)
            conn.execute(
                "INSERT INTO sends (campaign_id, account_id, hold_id, audience_count, "
                "price_micros, status, started_at, links) "
                "VALUES (%s, %s, %s, %s, %s, 'sending', %s, %s)",
                (
                    campaign_id,
                    account_id,
                    hold_id,
                    len(contact_seqs),
                    price_micros,
                    now,
                    _json(list(links)),
                ),
            )
            # The plan: one queued recipient per contact, by COPY (100,000 rows in well
            # under a second). Campaign ids are ours: no COPY escaping needed.
            with conn.cursor().copy(
                "COPY recipients (campaign_id, contact_seq, state) FROM STDIN"
            ) as copy:
                prefix = f"{_copy_text(campaign_id)}\t"
                chunk = 50_000
                for i in range(0, len(contact_seqs), chunk):
                    copy.write(
                        "".join(
                            f"{prefix}{seq}\tqueued\n" for seq in contact_seqs[i : i + chunk]
                        ).encode()
                    )
            sent = CampaignSentData(
                campaign_id=campaign_id, audience_count=len(contact_seqs), hold_id=hold_id
            )
            _emit(conn, [record_event(account_id, "campaign.sent", sent, now)], time.time())
            return SendRow(
                campaign_id=campaign_id,
                account_id=account_id,
                hold_id=hold_id,
                audience_count=len(contact_seqs),
                price_micros=price_micros,
                status="sending",
                last_error=None,
                started_at=now,
                completed_at=None,
                charged_micros=None,
            )

        return await self._tx(tx)

    async def get_send(self, account_id: str, campaign_id: str) -> SendRow | None:
        def q(conn: Conn) -> SendRow | None:
            r = conn.execute(
                f"SELECT {_SEND_COLUMNS} FROM sends WHERE account_id = %s AND campaign_id = %s",
                (account_id, campaign_id),
            ).fetchone()
            return None if r is None else _send(r)

        return await self._tx(q)

    async def record_engagement(
        self,
        campaign_seq: int,
        contact_seq: int,
        kind: str,
        link_id: int | None,
        user_agent: str | None,
        now: str,
    ) -> str | None:
        def tx(conn: Conn) -> str | None:
            row = conn.execute(
                "SELECT c.id, c.account_id, s.links FROM campaigns c "
                "JOIN sends s ON s.campaign_id = c.id "
                "JOIN recipients r ON r.campaign_id = c.id AND r.contact_seq = %s "
                "WHERE c.seq = %s",
                (contact_seq, campaign_seq),
            ).fetchone()
            if row is None:
                return None
            campaign_id, account_id, links_json = row
            target = ""
            if kind == "click":
                links = _decode_tags(links_json)
                if link_id is None or not 0 <= link_id < len(links):
                    return None
                target = links[link_id]
            conn.execute(
                "INSERT INTO engagements (campaign_id, contact_seq, kind, link_id, user_agent, "
                "created_at) VALUES (%s, %s, %s, %s, %s, %s)",
                (campaign_id, contact_seq, kind, link_id, (user_agent or "")[:500], now),
            )
            contact = conn.execute(
                "SELECT id, email FROM contacts WHERE seq = %s AND account_id = %s",
                (contact_seq, account_id),
            ).fetchone()
            data = EmailEventData(
                campaign_id=campaign_id,
                contact_id=contact[0] if contact else None,
                email=contact[1] if contact else None,
                email_id=f"{campaign_id}.{contact_seq}",
                url=target or None,
                user_agent=(user_agent or None) and user_agent[:500],
            )
            event = "email.opened" if kind == "open" else "email.clicked"
            _emit(conn, [record_event(account_id, event, data, now)], time.time())
            return target

        return await self._tx(tx)

    async def apply_feedback(
        self,
        campaign_id: str,
        contact_seq: int,
        kind: str,
        detail: str | None,
        now: str,
        account_id: str | None = None,
    ) -> bool:
        def tx(conn: Conn) -> bool:
            row = conn.execute(
                "SELECT s.account_id FROM sends s JOIN recipients r "
                "ON r.campaign_id = s.campaign_id AND r.contact_seq = %s "
                "WHERE s.campaign_id = %s AND (%s::text IS NULL OR s.account_id = %s)",
                (contact_seq, campaign_id, account_id, account_id),
            ).fetchone()
            if row is None:
                return False
            owner = row[0]
            status = {"hard_bounce": "bounced", "complaint": "complained"}.get(kind)
            if status is not None:
                _bump_revision(conn, owner, 0)  # the account's contact lock, then read
            conn.execute(
                "INSERT INTO feedback (campaign_id, contact_seq, kind, detail, created_at) "
                "VALUES (%s, %s, %s, %s, %s)",
                (campaign_id, contact_seq, kind, (detail or "")[:1000], now),
            )
            if status is not None:
                current = conn.execute(
                    "SELECT status FROM contacts WHERE seq = %s AND account_id = %s",
                    (contact_seq, owner),
                ).fetchone()
                # A complaint outranks a bounce; neither re-subscribes or downgrades.
                upgrade = current is not None and (
                    current[0] == "subscribed" or (current[0] == "bounced" and status != "bounced")
                )
                if upgrade:
                    rev = _bump_revision(conn, owner, 1)
                    conn.execute(
                        "UPDATE contacts SET status = %s, updated_at = %s, rev = %s "
                        "WHERE seq = %s AND account_id = %s",
                        (status, now, rev, contact_seq, owner),
                    )
            contact = conn.execute(
                "SELECT id, email FROM contacts WHERE seq = %s AND account_id = %s",
                (contact_seq, owner),
            ).fetchone()
            data = EmailEventData(
                campaign_id=campaign_id,
                contact_id=contact[0] if contact else None,
                email=contact[1] if contact else None,
                email_id=f"{campaign_id}.{contact_seq}",
                smtp_response=detail,
                bounce_type=None
                if kind == "complaint"
                else ("hard" if kind == "hard_bounce" else "soft"),
            )
            event = "email.complained" if kind == "complaint" else "email.bounced"
            _emit(conn, [record_event(owner, event, data, now)], time.time())
            return True

        return await self._tx(tx)

    async def campaign_seq_to_id(self, campaign_seq: int) -> str | None:
        def q(conn: Conn) -> str | None:
            r = conn.execute("SELECT id FROM campaigns WHERE seq = %s", (campaign_seq,)).fetchone()
            return None if r is None else str(r[0])

        return await self._tx(q)

    async def feedback_counts(self, campaign_id: str) -> dict[str, int]:
        def q(conn: Conn) -> dict[str, int]:
            return {
                kind: n
                for kind, n in conn.execute(
                    "SELECT kind, count(DISTINCT contact_seq) FROM feedback "
                    "WHERE campaign_id = %s GROUP BY kind",
                    (campaign_id,),
                )
            }

        return await self._tx(q)

    async def engagement_counts(self, campaign_id: str) -> dict[str, tuple[int, int]]:
        def q(conn: Conn) -> dict[str, tuple[int, int]]:
            return {
                kind: (unique, total)
                for kind, unique, total in conn.execute(
                    "SELECT kind, count(DISTINCT contact_seq), count(*) FROM engagements "
                    "WHERE campaign_id = %s GROUP BY kind",
                    (campaign_id,),
                )
            }

        return await self._tx(q)

    async def active_sends(self) -> list[SendRow]:
        def q(conn: Conn) -> list[SendRow]:
            return [
                _send(r)
                for r in conn.execute(
                    f"SELECT {_SEND_COLUMNS} FROM sends "
                    "WHERE status IN ('sending', 'paused', 'cancelling') ORDER BY started_at"
                )
            ]

        return await self._tx(q)

    async def claim_recipients(
        self, campaign_id: str, limit: int, now: float, lease_until: float, owner: str = ""
    ) -> list[RecipientWork]:
        def tx(conn: Conn) -> list[RecipientWork]:
            # FOR SHARE on the send's row: a pause or cancel (which lock it FOR UPDATE)
            # commits either before this claim, which then sees it and claims nothing,
            # or after it, and then it sees what was claimed as in flight.
            status = conn.execute(
                "SELECT status FROM sends WHERE campaign_id = %s FOR SHARE", (campaign_id,)
            ).fetchone()
            if status is None or status[0] != "sending":
                return []
            conn.execute(_INDEX_SCANS_ONLY)
            # SKIP LOCKED: rows another node is claiming at this instant are passed over,
            # not waited for; the re-check under the row lock (READ COMMITTED) drops rows
            # another node claimed and committed since this statement's snapshot.
            tids: list[str] = []
            for sql, args in (
                (_PICK_DUE, (campaign_id, now)),  # retries that are due first
                (_PICK_QUEUED, (campaign_id,)),
            ):
                if len(tids) < limit:
                    picked = conn.execute(sql, (*args, limit - len(tids))).fetchall()
                    tids += [r[0] for r in picked]
            if not tids:
                return []
            conn.execute(_TIDS_ONLY)
            claimed = conn.execute(
                _CLAIM, (lease_until, owner or None, tids, campaign_id)
            ).fetchall()
            conn.execute(_INDEXES_AGAIN)
            contacts = {
                r[0]: r[1:]
                for r in conn.execute(
                    "SELECT seq, email, first_name, last_name, custom_fields, status "
                    "FROM contacts WHERE seq = ANY(%s)",
                    ([r[0] for r in claimed],),
                )
            }
            return claimed_work(claimed, contacts)

        return await self._tx(tx)

    async def record_results(self, results: Sequence[RecipientResult], now: str) -> None:
        def tx(conn: Conn) -> None:
            conn.execute(
                _RECORD,
                (
                    now,
                    [r.campaign_id for r in results],
                    [r.contact_seq for r in results],
                    [r.state for r in results],
                    [r.reply for r in results],
                    [r.next_attempt_at for r in results],
                    [1 if r.attempted else 0 for r in results],
                    [r.attempted_at if r.attempted else None for r in results],
                ),
            )
            _emit_email_events(conn, results, now)

        if results:
            await self._tx(tx)

    async def recover_leases(self, now: float) -> int:
        def tx(conn: Conn) -> int:
            return conn.execute(
                "UPDATE recipients SET state = 'queued', lease_until = NULL "
                "WHERE campaign_id IN (SELECT campaign_id FROM sends "
                "                      WHERE status IN ('sending', 'paused', 'cancelling')) "
                "AND state = 'sending' AND lease_until < %s",
                (now,),
            ).rowcount

        return await self._tx(tx)

    async def renew_leases(self, owner: str, lease_until: float) -> int:
        def tx(conn: Conn) -> int:
            return conn.execute(
                "UPDATE recipients SET lease_until = %s "
                "WHERE campaign_id IN (SELECT campaign_id FROM sends "
                "                      WHERE status IN ('sending', 'paused', 'cancelling')) "
                "AND state = 'sending' AND lease_owner = %s",
                (lease_until, owner),
            ).rowcount

        return await self._tx(tx)

    async def set_send_error(self, campaign_id: str, error: str | None) -> None:
        def tx(conn: Conn) -> None:
            conn.execute(
                "UPDATE sends SET last_error = %s "
                "WHERE campaign_id = %s AND last_error IS DISTINCT FROM %s",
                (error, campaign_id, error),
            )

        await self._tx(tx)

    async def recipient_counts(self, campaign_id: str) -> dict[str, int]:
        def q(conn: Conn) -> dict[str, int]:
            return {
                state: n
                for state, n in conn.execute(
                    "SELECT state, count(*) FROM recipients WHERE campaign_id = %s GROUP BY state",
                    (campaign_id,),
                )
            }

        return await self._tx(q)

    async def next_attempt_at(self, campaign_id: str) -> float | None:
        def q(conn: Conn) -> float | None:
            r = conn.execute(
                "SELECT min(next_attempt_at) FROM recipients "
                "WHERE campaign_id = %s AND state = 'deferred'",
                (campaign_id,),
            ).fetchone()
            return None if r is None or r[0] is None else float(r[0])

        return await self._tx(q)

    async def finish_send_if_done(self, campaign_id: str, now: str) -> SendRow | None:
        def tx(conn: Conn) -> SendRow | None:
            # Called after every commit of results, nearly always while recipients are
            # still open: found so without a lock, the answer needs none. (Locking first
            # queued every recorder behind the claims, which hold the row FOR SHARE.) A
            # recorder whose results closed the last recipients committed them before
            # calling, so the last one to commit sees none open.
            conn.execute(_INDEX_SCANS_ONLY)
            status = conn.execute(
                "SELECT status FROM sends WHERE campaign_id = %s", (campaign_id,)
            ).fetchone()
            if status is None or status[0] not in ("sending", "cancelling"):
                return None
            if status[0] == "sending" and _has_open(conn, campaign_id):
                return None
            # The send's row lock makes this happen once: a node that saw the same send
            # finish waits here, then finds it no longer sending or cancelling.
            r = conn.execute(
                f"SELECT {_SEND_COLUMNS} FROM sends WHERE campaign_id = %s "
                "AND status IN ('sending', 'cancelling') FOR UPDATE",
                (campaign_id,),
            ).fetchone()
            if r is None:
                return None
            send = _send(r)
            if send.status == "cancelling":
                # Handed back after the cancel (e.g. the relay was down): nothing more goes out.
                conn.execute(
                    "UPDATE recipients SET state = 'cancelled', updated_at = %s "
                    "WHERE campaign_id = %s AND state IN ('queued', 'deferred')",
                    (now, campaign_id),
                )
            if _has_open(conn, campaign_id):
                return None
            counts: dict[str, int] = dict(
                conn.execute(
                    "SELECT state, count(*) FROM recipients WHERE campaign_id = %s GROUP BY state",
                    (campaign_id,),
                ).fetchall()
            )
            delivered = counts.get("delivered", 0)
            charge = delivered * send.price_micros
            final = "sent" if send.status == "sending" else "cancelled"
            _settle(conn, send.account_id, send.hold_id, charge, now)
            conn.execute(
                "UPDATE sends SET status = %s, completed_at = %s, charged_micros = %s "
                "WHERE campaign_id = %s",
                (final, now, charge, campaign_id),
            )
            conn.execute(
                "UPDATE campaigns SET status = %s, updated_at = %s WHERE id = %s",
                (final, now, campaign_id),
            )
            completed = CampaignCompletedData(
                campaign_id=campaign_id,
                status=final,  # type: ignore[arg-type]  # "sent" or "cancelled"
                audience_count=send.audience_count,
                delivered=delivered,
                bounced=counts.get("bounced", 0),
                failed=counts.get("failed", 0),
                suppressed=counts.get("suppressed", 0),
                cancelled=counts.get("cancelled", 0),
                charged_micros=charge,
            )
            _emit(
                conn,
                [record_event(send.account_id, "campaign.completed", completed, now)],
                time.time(),
            )
            return msgspec.structs.replace(
                send, status=final, completed_at=now, charged_micros=charge
            )

        return await self._tx(tx)

    async def cancel_send(self, account_id: str, campaign_id: str, now: str) -> SendRow:
        def tx(conn: Conn) -> SendRow:
            r = conn.execute(
                f"SELECT {_SEND_COLUMNS} FROM sends "
                "WHERE account_id = %s AND campaign_id = %s FOR UPDATE",
                (account_id, campaign_id),
            ).fetchone()
            if r is None:
                _campaign_state_error(conn, account_id, campaign_id, "sending")
                raise AssertionError("unreachable")
            send = _send(r)
            if send.status not in ("sending", "paused"):
                raise InvalidState(
                    f"campaign {campaign_id} is {send.status}, not sending", status=send.status
                )
            conn.execute(
                "UPDATE recipients SET state = 'cancelled', updated_at = %s "
                "WHERE campaign_id = %s AND state IN ('queued', 'deferred')",
                (now, campaign_id),
            )
            if send.status == "paused":
                conn.execute(
                    "UPDATE campaigns SET status = 'sending', updated_at = %s WHERE id = %s",
                    (now, campaign_id),
                )
            conn.execute(
                "UPDATE sends SET status = 'cancelling' WHERE campaign_id = %s", (campaign_id,)
            )
            return msgspec.structs.replace(send, status="cancelling")

        return await self._tx(tx)

    async def pause_send(self, account_id: str, campaign_id: str, now: str) -> SendRow:
        return await self._switch_send(account_id, campaign_id, "sending", "paused", now)

    async def resume_send(self, account_id: str, campaign_id: str, now: str) -> SendRow:
        return await self._switch_send(account_id, campaign_id, "paused", "sending", now)

    async def _switch_send(
        self, account_id: str, campaign_id: str, before: str, after: str, now: str
    ) -> SendRow:
        def tx(conn: Conn) -> SendRow:
            # The send's row lock: a pause and a finish (or a cancel) on another node
            # happen one after the other, each seeing the other's outcome.
            r = conn.execute(
                f"SELECT {_SEND_COLUMNS} FROM sends "
                "WHERE account_id = %s AND campaign_id = %s FOR UPDATE",
                (account_id, campaign_id),
            ).fetchone()
            if r is None:
                _campaign_state_error(conn, account_id, campaign_id, before)
                raise AssertionError("unreachable")
            send = _send(r)
            if send.status != before:
                raise InvalidState(
                    f"campaign {campaign_id} is {send.status}, not {before}", status=send.status
                )
            conn.execute(
                "UPDATE sends SET status = %s WHERE campaign_id = %s", (after, campaign_id)
            )
            conn.execute(
                "UPDATE campaigns SET status = %s, updated_at = %s WHERE id = %s",
                (after, now, campaign_id),
            )
            return msgspec.structs.replace(send, status=after)

        return await self._tx(tx)

    # -- idempotency keys ----------------------------------------------------------

    async def idempotency_begin(
        self, account_id: str, key: str, fingerprint: str, now: float, ttl: float
    ) -> IdempotentReplay | None:
        def tx(conn: Conn) -> IdempotentReplay | None:
            conn.execute("DELETE FROM idempotency_keys WHERE created_at < %s", (now - ttl,))
            # Insert first: of two concurrent requests with one key, the second waits on
            # the first's uninserted key, then sees it (ON CONFLICT) and is refused below.
            claimed = conn.execute(
                "INSERT INTO idempotency_keys (account_id, key, fingerprint, created_at) "
                "VALUES (%s, %s, %s, %s) ON CONFLICT (account_id, key) DO NOTHING RETURNING 1",
                (account_id, key, fingerprint, now),
            ).fetchone()
            if claimed is not None:
                return None
            r = conn.execute(
                "SELECT fingerprint, status, response FROM idempotency_keys "
                "WHERE account_id = %s AND key = %s",
                (account_id, key),
            ).fetchone()
            if r is None:  # forgotten (abandoned) in between: the caller may retry
                raise Conflict("a request with this Idempotency-Key is still in progress")
            if r[0] != fingerprint:
                raise IdempotencyKeyReused("this Idempotency-Key was used with a different request")
            if r[1] is None:
                raise Conflict("a request with this Idempotency-Key is still in progress")
            return IdempotentReplay(status=r[1], body=bytes(r[2]))

        return await self._tx(tx)

    async def idempotency_finish(self, account_id: str, key: str, status: int, body: bytes) -> None:
        def tx(conn: Conn) -> None:
            conn.execute(
                "UPDATE idempotency_keys SET status = %s, response = %s "
                "WHERE account_id = %s AND key = %s",
                (status, body, account_id, key),
            )

        await self._tx(tx)

    async def idempotency_abandon(self, account_id: str, key: str) -> None:
        def tx(conn: Conn) -> None:
            conn.execute(
                "DELETE FROM idempotency_keys "
                "WHERE account_id = %s AND key = %s AND status IS NULL",
                (account_id, key),
            )

        await self._tx(tx)

    # -- webhooks ------------------------------------------------------------------

    async def insert_endpoint(self, row: EndpointRow) -> EndpointRow:
        def tx(conn: Conn) -> EndpointRow:
            inserted = conn.execute(
                "INSERT INTO webhook_endpoints (id, account_id, url, events, enabled, "
                "secret_version, created_at, updated_at, batch_size) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING seq",
                (
                    row.id,
                    row.account_id,
                    row.url,
                    _json(row.events),
                    row.enabled,
                    row.secret_version,
                    row.created_at,
                    row.updated_at,
                    row.batch_size,
                ),
            ).fetchone()
            assert inserted is not None
            row.seq = int(inserted[0])
            return row

        return await self._tx(tx)

    async def get_endpoint(self, account_id: str, endpoint_id: str) -> EndpointRow | None:
        def q(conn: Conn) -> EndpointRow | None:
            r = conn.execute(
                f"SELECT {_ENDPOINT_COLUMNS} FROM webhook_endpoints "
                "WHERE account_id = %s AND id = %s",
                (account_id, endpoint_id),
            ).fetchone()
            return None if r is None else _endpoint(r)

        return await self._tx(q)

    async def list_endpoints(self, account_id: str) -> list[EndpointRow]:
        def q(conn: Conn) -> list[EndpointRow]:
            return [
                _endpoint(r)
                for r in conn.execute(
                    f"SELECT {_ENDPOINT_COLUMNS} FROM webhook_endpoints "
                    "WHERE account_id = %s ORDER BY seq",
                    (account_id,),
                )
            ]

        return await self._tx(q)

    async def update_endpoint(self, row: EndpointRow) -> EndpointRow:
        def tx(conn: Conn) -> EndpointRow:
            cur = conn.execute(
                "UPDATE webhook_endpoints SET url = %s, events = %s, enabled = %s, "
                "disabled_reason = %s, secret_version = %s, updated_at = %s, batch_size = %s, "
                "failing_since = CASE WHEN %s THEN NULL ELSE failing_since END "
                "WHERE account_id = %s AND id = %s",
                (
                    row.url,
                    _json(row.events),
                    row.enabled,
                    row.disabled_reason,
                    row.secret_version,
                    row.updated_at,
                    row.batch_size,
                    row.enabled,
                    row.account_id,
                    row.id,
                ),
            )
            if cur.rowcount != 1:
                raise NotFound(f"no webhook {row.id}")
            return row

        return await self._tx(tx)

    async def delete_endpoint(self, account_id: str, endpoint_id: str) -> bool:
        def tx(conn: Conn) -> bool:
            cur = conn.execute(
                "DELETE FROM webhook_endpoints WHERE account_id = %s AND id = %s",
                (account_id, endpoint_id),
            )
            if cur.rowcount:
                conn.execute(
                    "UPDATE webhook_deliveries SET state = 'failed', "
                    "last_error = 'endpoint deleted' "
                    "WHERE endpoint_id = %s AND state IN ('pending', 'sending')",
                    (endpoint_id,),
                )
            return cur.rowcount == 1

        return await self._tx(tx)

    async def emit(self, events: Sequence[EventRecord], now: float, only: str | None = None) -> int:
        return await self._tx(lambda conn: _emit(conn, events, now, only))

    async def claim_deliveries(
        self, limit: int, now: float, lease_until: float
    ) -> list[DeliveryWork]:
        def tx(conn: Conn) -> list[DeliveryWork]:
            # As with recipients: SKIP LOCKED so several webhook nodes share the outbox
            # without waiting for each other or taking the same delivery.
            rows = conn.execute(
                "WITH picked AS ("
                "  SELECT d.seq FROM webhook_deliveries d "
                "  JOIN webhook_endpoints w ON w.id = d.endpoint_id "
                "  WHERE ((d.state = 'pending' AND d.next_attempt_at <= %s) "
                "      OR (d.state = 'sending' AND d.lease_until < %s)) AND w.enabled "
                "  ORDER BY d.next_attempt_at, d.seq LIMIT %s FOR UPDATE OF d SKIP LOCKED"
                "), claimed AS ("
                "  UPDATE webhook_deliveries d SET state = 'sending', lease_until = %s "
                "  FROM picked WHERE d.seq = picked.seq "
                "  RETURNING d.seq, d.endpoint_id, d.event_seq, d.attempts, d.next_attempt_at"
                ") "
                "SELECT cl.seq, cl.endpoint_id, w.url, w.secret_version, e.id, e.payload, "
                "cl.attempts, w.batch_size FROM claimed cl "
                "JOIN webhook_endpoints w ON w.id = cl.endpoint_id "
                "JOIN events e ON e.seq = cl.event_seq "
                "ORDER BY cl.next_attempt_at, cl.seq",
                (now, now, limit, lease_until),
            ).fetchall()
            return [
                DeliveryWork(
                    delivery_seq=r[0],
                    endpoint_id=r[1],
                    url=r[2],
                    secret_version=r[3],
                    event_id=r[4],
                    payload=bytes(r[5]),
                    attempts=r[6],
                    batch_size=r[7],
                )
                for r in rows
            ]

        return await self._tx(tx)

    async def record_deliveries(self, outcomes: Sequence[DeliveryOutcome], now: float) -> None:
        def tx(conn: Conn) -> None:
            for o in outcomes:
                state = "succeeded" if o.succeeded else "pending" if o.next_attempt_at else "failed"
                conn.execute(
                    "UPDATE webhook_deliveries SET state = %s, attempts = attempts + 1, "
                    "next_attempt_at = coalesce(%s, next_attempt_at), lease_until = NULL, "
                    "last_status = %s, last_error = %s, updated_at = %s WHERE seq = %s",
                    (state, o.next_attempt_at, o.status, o.error, now, o.delivery_seq),
                )
            # One update per endpoint, in a fixed order (no deadlock between nodes).
            by_endpoint: dict[str, list[DeliveryOutcome]] = {}
            for o in outcomes:
                by_endpoint.setdefault(o.endpoint_id, []).append(o)
            for endpoint_id in sorted(by_endpoint):
                group = by_endpoint[endpoint_id]
                if group[-1].succeeded:
                    conn.execute(
                        "UPDATE webhook_endpoints SET failing_since = NULL WHERE id = %s",
                        (endpoint_id,),
                    )
                elif any(o.succeeded for o in group):  # failing again since a success
                    conn.execute(
                        "UPDATE webhook_endpoints SET failing_since = %s WHERE id = %s",
                        (now, endpoint_id),
                    )
                else:
                    conn.execute(
                        "UPDATE webhook_endpoints SET failing_since = coalesce(failing_since, %s) "
                        "WHERE id = %s",
                        (now, endpoint_id),
                    )
                disable = next((o.disable_endpoint for o in group if o.disable_endpoint), None)
                if disable:
                    conn.execute(
                        "UPDATE webhook_endpoints SET enabled = FALSE, disabled_reason = %s "
                        "WHERE id = %s",
                        (disable, endpoint_id),
                    )

        if outcomes:
            await self._tx(tx)

    async def endpoint_failing_since(self, endpoint_id: str) -> float | None:
        def q(conn: Conn) -> float | None:
            r = conn.execute(
                "SELECT failing_since FROM webhook_endpoints WHERE id = %s", (endpoint_id,)
            ).fetchone()
            return None if r is None or r[0] is None else float(r[0])

        return await self._tx(q)

    async def list_deliveries(
        self, account_id: str, endpoint_id: str, limit: int
    ) -> list[DeliveryRow]:
        def q(conn: Conn) -> list[DeliveryRow]:
            return [
                DeliveryRow(
                    delivery_seq=r[0],
                    event_id=r[1],
                    event_type=r[2],
                    state=r[3],
                    attempts=r[4],
                    last_status=r[5],
                    last_error=r[6],
                    next_attempt_at=r[7],
                )
                for r in conn.execute(
                    "SELECT d.seq, e.id, e.type, d.state, d.attempts, d.last_status, "
                    "d.last_error, d.next_attempt_at FROM webhook_deliveries d "
                    "JOIN events e ON e.seq = d.event_seq "
                    "WHERE d.endpoint_id = %s AND e.account_id = %s ORDER BY d.seq DESC LIMIT %s",
                    (endpoint_id, account_id, limit),
                )
            ]

        return await self._tx(q)

    async def replay_delivery(
        self, account_id: str, endpoint_id: str, delivery_seq: int, now: float
    ) -> bool:
        def tx(conn: Conn) -> bool:
            cur = conn.execute(
                "UPDATE webhook_deliveries SET state = 'pending', next_attempt_at = %s "
                "WHERE seq = %s AND endpoint_id = %s AND state IN ('succeeded', 'failed') "
                "AND endpoint_id IN (SELECT id FROM webhook_endpoints WHERE account_id = %s)",
                (now, delivery_seq, endpoint_id, account_id),
            )
            return cur.rowcount == 1

        return await self._tx(tx)


class _Unchanged(Exception):
    """Raised inside a transaction to roll it back when it turned out to change nothing."""


def _campaign_state_error(conn: Conn, account_id: str, campaign_id: str, expect: str) -> None:
    found = conn.execute(
        "SELECT status FROM campaigns WHERE account_id = %s AND id = %s",
        (account_id, campaign_id),
    ).fetchone()
    if found is None:
        raise NotFound(f"no campaign {campaign_id}")
    raise InvalidState(f"campaign {campaign_id} is {found[0]}, not {expect}", status=found[0])


__all__ = ["PostgresStore"]
