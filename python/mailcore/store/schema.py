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

# Pause/resume (a 'paused' send takes no new work) and the time of a recipient's first
# attempt (deferred recipients fail once older than the retry age limit). SQLite cannot
# change a CHECK constraint in place: the sends table is rebuilt.
SQLITE_MIGRATIONS.append(
    """
CREATE TABLE sends_v7 (
    campaign_id TEXT PRIMARY KEY REFERENCES campaigns (id),
    account_id TEXT NOT NULL REFERENCES accounts (id),
    hold_id TEXT NOT NULL REFERENCES holds (id),
    audience_count INTEGER NOT NULL,
    price_micros INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('sending', 'paused', 'cancelling', 'sent',
                                           'cancelled')),
    last_error TEXT,
    started_at TEXT NOT NULL,
    completed_at TEXT,
    charged_micros INTEGER,
    links TEXT NOT NULL DEFAULT '[]'
);
INSERT INTO sends_v7 (campaign_id, account_id, hold_id, audience_count, price_micros, status,
                      last_error, started_at, completed_at, charged_micros, links)
    SELECT campaign_id, account_id, hold_id, audience_count, price_micros, status, last_error,
           started_at, completed_at, charged_micros, links FROM sends;
DROP TABLE sends;
ALTER TABLE sends_v7 RENAME TO sends;
CREATE INDEX sends_status ON sends (status);
ALTER TABLE recipients ADD COLUMN first_attempt_at REAL
"""
)

# 8: leases name their holder, so a live node can renew its own (several nodes share a
# PostgreSQL database; a lease that is not renewed expires and its recipients are
# claimed again by the others).
SQLITE_MIGRATIONS.append(
    """
ALTER TABLE recipients ADD COLUMN lease_owner TEXT
"""
)

# PostgreSQL: the same numbered history, in its dialect. Integers that hold money or
# counts are BIGINT; times stored as ISO text in SQLite stay text (the store hands them
# through unchanged); JSON lists and objects are JSONB; the ledger is append-only by
# trigger as in SQLite.
POSTGRES_MIGRATIONS: list[str] = [
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
    balance BIGINT NOT NULL DEFAULT 0,
    held BIGINT NOT NULL DEFAULT 0,
    CHECK (held >= 0),
    CHECK (balance - held >= 0)
);
CREATE TABLE holds (
    seq BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    account_id TEXT NOT NULL REFERENCES accounts (id),
    amount BIGINT NOT NULL CHECK (amount >= 0),
    status TEXT NOT NULL CHECK (status IN ('open', 'settled')),
    posted BIGINT CHECK (posted IS NULL OR (posted >= 0 AND posted <= amount)),
    reference TEXT,
    created_at TEXT NOT NULL,
    resolved_at TEXT
);
CREATE INDEX holds_account_status ON holds (account_id, status);
CREATE TABLE ledger (
    seq BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts (id),
    kind TEXT NOT NULL CHECK (kind IN ('credit', 'debit', 'hold', 'post', 'release')),
    amount BIGINT NOT NULL,
    hold_id TEXT,
    memo TEXT,
    created_at TEXT NOT NULL
);
CREATE INDEX ledger_account ON ledger (account_id, seq);
CREATE FUNCTION ledger_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the ledger is append-only';
END
$$;
CREATE TRIGGER ledger_append_only_change BEFORE UPDATE OR DELETE ON ledger
FOR EACH ROW EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER ledger_append_only_truncate BEFORE TRUNCATE ON ledger
FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only();
CREATE TABLE contacts (
    seq BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    account_id TEXT NOT NULL REFERENCES accounts (id),
    email TEXT NOT NULL,
    first_name TEXT,
    last_name TEXT,
    tags JSONB NOT NULL,
    custom_fields JSONB NOT NULL,
    status TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    rev BIGINT NOT NULL,
    UNIQUE (account_id, email)
);
CREATE INDEX contacts_account_seq ON contacts (account_id, seq);
CREATE INDEX contacts_account_rev ON contacts (account_id, rev);
CREATE TABLE contact_revisions (
    account_id TEXT PRIMARY KEY REFERENCES accounts (id),
    rev BIGINT NOT NULL
);
CREATE TABLE contact_deletions (
    account_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    rev BIGINT NOT NULL
);
CREATE INDEX contact_deletions_account_rev ON contact_deletions (account_id, rev);
CREATE TABLE campaigns (
    seq BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    account_id TEXT NOT NULL REFERENCES accounts (id),
    status TEXT NOT NULL,
    definition BYTEA NOT NULL,
    audience_count BIGINT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    sent_at TEXT
);
CREATE INDEX campaigns_account_seq ON campaigns (account_id, seq)
""",
    """
CREATE TABLE sends (
    campaign_id TEXT PRIMARY KEY REFERENCES campaigns (id),
    account_id TEXT NOT NULL REFERENCES accounts (id),
    hold_id TEXT NOT NULL REFERENCES holds (id),
    audience_count BIGINT NOT NULL,
    price_micros BIGINT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('sending', 'cancelling', 'sent', 'cancelled')),
    last_error TEXT,
    started_at TEXT NOT NULL,
    completed_at TEXT,
    charged_micros BIGINT
);
CREATE INDEX sends_status ON sends (status);
CREATE TABLE recipients (
    campaign_id TEXT NOT NULL,
    contact_seq BIGINT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('queued', 'sending', 'delivered', 'deferred', 'bounced',
                                         'failed', 'suppressed', 'cancelled')),
    attempts INTEGER NOT NULL DEFAULT 0,
    lease_until DOUBLE PRECISION,
    next_attempt_at DOUBLE PRECISION,
    reply TEXT,
    updated_at TEXT,
    PRIMARY KEY (campaign_id, contact_seq)
);
CREATE INDEX recipients_state ON recipients (campaign_id, state, next_attempt_at);
CREATE TABLE idempotency_keys (
    account_id TEXT NOT NULL,
    key TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    status INTEGER,
    response BYTEA,
    created_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (account_id, key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at)
""",
    """
CREATE TABLE webhook_endpoints (
    seq BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    account_id TEXT NOT NULL REFERENCES accounts (id),
    url TEXT NOT NULL,
    events JSONB NOT NULL,
    enabled BOOLEAN NOT NULL DEFAULT TRUE,
    disabled_reason TEXT,
    secret_version INTEGER NOT NULL DEFAULT 1,
    failing_since DOUBLE PRECISION,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX webhook_endpoints_account ON webhook_endpoints (account_id, seq);
CREATE TABLE events (
    seq BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    account_id TEXT NOT NULL,
    type TEXT NOT NULL,
    payload BYTEA NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE webhook_deliveries (
    seq BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    event_seq BIGINT NOT NULL REFERENCES events (seq),
    endpoint_id TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'sending', 'succeeded', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at DOUBLE PRECISION NOT NULL,
    lease_until DOUBLE PRECISION,
    last_status INTEGER,
    last_error TEXT,
    updated_at DOUBLE PRECISION
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (state, next_attempt_at);
CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (endpoint_id, seq)
""",
    """
ALTER TABLE sends ADD COLUMN links TEXT NOT NULL DEFAULT '[]';
CREATE TABLE engagements (
    seq BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    campaign_id TEXT NOT NULL,
    contact_seq BIGINT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('open', 'click')),
    link_id INTEGER,
    user_agent TEXT,
    created_at TEXT NOT NULL
);
CREATE INDEX engagements_campaign ON engagements (campaign_id, kind, contact_seq)
""",
    """
CREATE TABLE feedback (
    seq BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    campaign_id TEXT NOT NULL,
    contact_seq BIGINT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('hard_bounce', 'soft_bounce', 'complaint', 'unsubscribe')),
    detail TEXT,
    created_at TEXT NOT NULL
);
CREATE INDEX feedback_campaign ON feedback (campaign_id, kind, contact_seq)
""",
    """
ALTER TABLE webhook_endpoints ADD COLUMN batch_size INTEGER NOT NULL DEFAULT 1
""",
    # 7 (see SQLite's): PostgreSQL changes the CHECK constraint in place.
    """
ALTER TABLE sends DROP CONSTRAINT sends_status_check;
ALTER TABLE sends ADD CONSTRAINT sends_status_check
    CHECK (status IN ('sending', 'paused', 'cancelling', 'sent', 'cancelled'));
ALTER TABLE recipients ADD COLUMN first_attempt_at DOUBLE PRECISION
""",
    # 8 (see SQLite's). The partial index holds only the recipients still to be sent, so
    # a claim walks them in order without stepping over the delivered ones, however far
    # the send has got.
    """
ALTER TABLE recipients ADD COLUMN lease_owner TEXT;
CREATE INDEX recipients_open ON recipients (campaign_id, contact_seq)
    WHERE state IN ('queued', 'deferred', 'sending')
""",
]


# 9. The audience index's first load reads (seq, status, tags) of every contact of an
# account: from an index holding them it reads no table row (a third less CPU at 1M
# contacts). It replaces contacts_account_seq, whose columns it starts with (the same
# lookups, one index to maintain on writes as before).
SQLITE_MIGRATIONS.append(
    """
CREATE INDEX contacts_audience ON contacts (account_id, seq, status, tags);
DROP INDEX contacts_account_seq
"""
)
POSTGRES_MIGRATIONS.append(
    """
CREATE INDEX contacts_audience ON contacts (account_id, seq) INCLUDE (status, tags);
DROP INDEX contacts_account_seq
"""
)


# 10. PostgreSQL drops the partial index recipients_open (migration 8). Claims no longer
# walk it, and with it the planner had one more way to misjudge a campaign newer than the
# statistics (estimated at one row): the pick of due retries and the recording of
# results were planned as walks of every open recipient of the campaign through it,
# filtered, instead of index conditions on recipients_state. SQLite never had it: the
# number is kept in step with nothing to do.
SQLITE_MIGRATIONS.append("")
POSTGRES_MIGRATIONS.append(
    """
DROP INDEX IF EXISTS recipients_open
"""
)
