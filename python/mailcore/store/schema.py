"""Migrations, oldest first. A migration is never edited once released; add a new one."""

from __future__ import annotations

SQLITE_MIGRATIONS: list[str] = [
    """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE accounts (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE api_keys (
    key_hash TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts (id),
    prefix TEXT NOT NULL,
    created_at TEXT NOT NULL,
    revoked_at TEXT
);
CREATE TABLE wallets (
    account_id TEXT PRIMARY KEY REFERENCES accounts (id),
    balance INTEGER NOT NULL DEFAULT 0,
    held INTEGER NOT NULL DEFAULT 0,
    CHECK (held >= 0),
    CHECK (balance - held >= 0)
);
CREATE TABLE holds (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    account_id TEXT NOT NULL REFERENCES accounts (id),
    amount INTEGER NOT NULL CHECK (amount >= 0),
    status TEXT NOT NULL CHECK (status IN ('open', 'settled')),
    posted INTEGER CHECK (posted IS NULL OR (posted >= 0 AND posted <= amount)),
    reference TEXT,
    created_at TEXT NOT NULL,
    resolved_at TEXT
);
CREATE INDEX holds_account_status ON holds (account_id, status);
CREATE TABLE ledger (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id TEXT NOT NULL REFERENCES accounts (id),
    kind TEXT NOT NULL CHECK (kind IN ('credit', 'debit', 'hold', 'post', 'release')),
    amount INTEGER NOT NULL,
    hold_id TEXT,
    memo TEXT,
    created_at TEXT NOT NULL
);
CREATE INDEX ledger_account ON ledger (account_id, seq);
CREATE TRIGGER ledger_append_only_update BEFORE UPDATE ON ledger
BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END;
CREATE TRIGGER ledger_append_only_delete BEFORE DELETE ON ledger
BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END;
CREATE TABLE contacts (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    account_id TEXT NOT NULL REFERENCES accounts (id),
    email TEXT NOT NULL,
    first_name TEXT,
    last_name TEXT,
    tags TEXT NOT NULL,
    custom_fields TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    rev INTEGER NOT NULL,
    UNIQUE (account_id, email)
);
CREATE INDEX contacts_account_seq ON contacts (account_id, seq);
CREATE INDEX contacts_account_rev ON contacts (account_id, rev);
CREATE TABLE contact_revisions (
    account_id TEXT PRIMARY KEY REFERENCES accounts (id),
    rev INTEGER NOT NULL
);
CREATE TABLE contact_deletions (
    account_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    rev INTEGER NOT NULL
);
CREATE INDEX contact_deletions_account_rev ON contact_deletions (account_id, rev);
CREATE TABLE campaigns (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    account_id TEXT NOT NULL REFERENCES accounts (id),
    status TEXT NOT NULL,
    definition BLOB NOT NULL,
    audience_count INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    sent_at TEXT
);
CREATE INDEX campaigns_account_seq ON campaigns (account_id, seq)
""",
]

SQLITE_MIGRATIONS.append(
    """
CREATE TABLE sends (
    campaign_id TEXT PRIMARY KEY REFERENCES campaigns (id),
    account_id TEXT NOT NULL REFERENCES accounts (id),
    hold_id TEXT NOT NULL REFERENCES holds (id),
    audience_count INTEGER NOT NULL,
    price_micros INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('sending', 'cancelling', 'sent', 'cancelled')),
    last_error TEXT,
    started_at TEXT NOT NULL,
    completed_at TEXT,
    charged_micros INTEGER
);
CREATE INDEX sends_status ON sends (status);
CREATE TABLE recipients (
    campaign_id TEXT NOT NULL,
    contact_seq INTEGER NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('queued', 'sending', 'delivered', 'deferred', 'bounced',
                                         'failed', 'suppressed', 'cancelled')),
    attempts INTEGER NOT NULL DEFAULT 0,
    lease_until REAL,
    next_attempt_at REAL,
    reply TEXT,
    updated_at TEXT,
    PRIMARY KEY (campaign_id, contact_seq)
) WITHOUT ROWID;
CREATE INDEX recipients_state ON recipients (campaign_id, state, next_attempt_at);
CREATE TABLE idempotency_keys (
    account_id TEXT NOT NULL,
    key TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    status INTEGER,
    response BLOB,
    created_at REAL NOT NULL,
    PRIMARY KEY (account_id, key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at)
"""
)

SQLITE_MIGRATIONS.append(
    """
CREATE TABLE webhook_endpoints (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    account_id TEXT NOT NULL REFERENCES accounts (id),
    url TEXT NOT NULL,
    events TEXT NOT NULL,
    enabled INTEGER NOT NULL DEFAULT 1,
    disabled_reason TEXT,
    secret_version INTEGER NOT NULL DEFAULT 1,
    failing_since REAL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX webhook_endpoints_account ON webhook_endpoints (account_id, seq);
CREATE TABLE events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    account_id TEXT NOT NULL,
    type TEXT NOT NULL,
    payload BLOB NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE webhook_deliveries (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_seq INTEGER NOT NULL REFERENCES events (seq),
    endpoint_id TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'sending', 'succeeded', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    lease_until REAL,
    last_status INTEGER,
    last_error TEXT,
    updated_at REAL
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (state, next_attempt_at);
CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (endpoint_id, seq)
"""
)

SQLITE_MIGRATIONS.append(
    """
ALTER TABLE sends ADD COLUMN links TEXT NOT NULL DEFAULT '[]';
CREATE TABLE engagements (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    campaign_id TEXT NOT NULL,
    contact_seq INTEGER NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('open', 'click')),
    link_id INTEGER,
    user_agent TEXT,
    created_at TEXT NOT NULL
);
CREATE INDEX engagements_campaign ON engagements (campaign_id, kind, contact_seq)
"""
)

SQLITE_MIGRATIONS.append(
    """
CREATE TABLE feedback (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    campaign_id TEXT NOT NULL,
    contact_seq INTEGER NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('hard_bounce', 'soft_bounce', 'complaint', 'unsubscribe')),
    detail TEXT,
    created_at TEXT NOT NULL
);
CREATE INDEX feedback_campaign ON feedback (campaign_id, kind, contact_seq)
"""
)

SQLITE_MIGRATIONS.append(
    """
ALTER TABLE webhook_endpoints ADD COLUMN batch_size INTEGER NOT NULL DEFAULT 1
"""
)

# The audience index's first load reads (seq, status, tags) of every contact of an account:
# from an index holding them it reads no table row (a third less CPU at 1M contacts).
# It replaces contacts_account_seq, whose columns it starts with (same lookups, one index
# to maintain on writes as before).
SQLITE_MIGRATIONS.append(
    """
CREATE INDEX contacts_audience ON contacts (account_id, seq, status, tags);
DROP INDEX contacts_account_seq
"""
)
