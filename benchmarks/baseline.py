"""The alternatives a Python team would write by hand, to compare mailcore against.

``python -m benchmarks.baseline serve --db PATH --port P --api-key KEY``
    A minimal Starlette app with one endpoint, ``POST /v1/mail/contacts``: the same
    bearer-key check (SHA-256 looked up in a table), ``json.loads`` of the body, one
    ``INSERT`` committed per request into a table with a unique (account, email) index,
    201 with the contact as JSON (409 on a duplicate). Served by hypercorn's Trio worker
    with the settings of ``mailcore.rest.server``. The sqlite3 calls run directly on the
    event loop, as hand-written code usually does.

``python -m benchmarks.baseline import-csv --db PATH --csv FILE``
    The naive bulk import: ``csv.DictReader`` and one ``INSERT ... ON CONFLICT`` per row
    through ``executemany``, in one transaction. Prints ``{"rows", "seconds",
    "peakRssKib"}``; the time covers decoding, parsing, inserting and the commit.

Both use the PRAGMAs mailcore uses (WAL, synchronous=NORMAL), so neither side wins by
skipping fsyncs the other does.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import sqlite3
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ACCOUNT_ID = "acc_baseline"

SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (key_hash TEXT PRIMARY KEY, account_id TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS contacts (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    account_id TEXT NOT NULL,
    email TEXT NOT NULL,
    first_name TEXT,
    last_name TEXT,
    tags TEXT NOT NULL,
    custom_fields TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    UNIQUE (account_id, email)
);
"""

INSERT = (
    "INSERT INTO contacts (id, account_id, email, first_name, last_name, tags, custom_fields, "
    "status, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
UPSERT = (
    INSERT + " ON CONFLICT (account_id, email) DO UPDATE SET first_name = excluded.first_name, "
    "last_name = excluded.last_name, tags = excluded.tags, "
    "custom_fields = excluded.custom_fields, updated_at = excluded.updated_at"
)


def open_db(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.executescript(SCHEMA)
    return conn


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def key_hash(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


# -- the hand-written endpoint ------------------------------------------------------


def create_app(db: Path, api_key: str) -> Any:
    """The Starlette app (imports kept local: the CSV import needs none of them)."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    conn = open_db(db)
    with conn:
        conn.execute(
            "INSERT OR IGNORE INTO api_keys VALUES (?, ?)", (key_hash(api_key), ACCOUNT_ID)
        )

    async def create_contact(request: Request) -> JSONResponse:
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        found = conn.execute(
            "SELECT account_id FROM api_keys WHERE key_hash = ?", (key_hash(token),)
        ).fetchone()
        if found is None:
            return JSONResponse({"error": "unauthorized"}, status_code=401)
        try:
            data = json.loads(await request.body())
        except ValueError:
            return JSONResponse({"error": "invalid json"}, status_code=400)
        email = str(data.get("email", "")).strip().lower()
        if "@" not in email:
            return JSONResponse({"error": "invalid email"}, status_code=422)
        now = now_iso()
        contact = {
            "id": "con_" + uuid.uuid4().hex,
            "email": email,
            "firstName": data.get("firstName"),
            "lastName": data.get("lastName"),
            "tags": data.get("tags", []),
            "customFields": data.get("customFields", {}),
            "status": "subscribed",
            "createdAt": now,
            "updatedAt": now,
        }
        try:
            with conn:  # one transaction per request, committed on exit
                conn.execute(
                    INSERT,
                    (
                        contact["id"],
                        found[0],
                        email,
                        contact["firstName"],
                        contact["lastName"],
                        json.dumps(contact["tags"]),
                        json.dumps(contact["customFields"]),
                        "subscribed",
                        now,
                        now,
                    ),
                )
        except sqlite3.IntegrityError:
            return JSONResponse({"error": "duplicate"}, status_code=409)
        return JSONResponse(contact, status_code=201)

    return Starlette(routes=[Route("/v1/mail/contacts", create_contact, methods=["POST"])])


def serve(db: Path, port: int, api_key: str) -> None:
    import trio
    from hypercorn.config import Config
    from hypercorn.trio import serve as hypercorn_serve

    # The same settings as mailcore.rest.server.hypercorn_config.
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    config.errorlog = "-"
    config.keep_alive_timeout = 75
    trio.run(hypercorn_serve, create_app(db, api_key), config)


# -- the naive bulk import ----------------------------------------------------------


def csv_params(body: bytes, now: str) -> Iterator[tuple[Any, ...]]:
    for rec in csv.DictReader(io.StringIO(body.decode("utf-8-sig"), newline="")):
        tags = [t.strip() for t in rec["tags"].split(";") if t.strip()]
        custom = {k: rec[k] for k in ("company", "plan") if rec[k]}
        yield (
            "con_" + uuid.uuid4().hex,
            ACCOUNT_ID,
            rec["email"].strip().lower(),
            rec["firstName"] or None,
            rec["lastName"] or None,
            json.dumps(tags),
            json.dumps(custom),
            "subscribed",
            now,
            now,
        )


def import_csv(db: Path, body: bytes) -> int:
    """Upsert every row in one transaction; returns the number of rows."""
    conn = open_db(db)
    try:
        with conn:
            cur = conn.executemany(UPSERT, csv_params(body, now_iso()))
        return cur.rowcount
    finally:
        conn.close()


def peak_rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.baseline")
    sub = parser.add_subparsers(dest="command", required=True)
    p_serve = sub.add_parser("serve")
    p_serve.add_argument("--db", type=Path, required=True)
    p_serve.add_argument("--port", type=int, required=True)
    p_serve.add_argument("--api-key", required=True)
    p_import = sub.add_parser("import-csv")
    p_import.add_argument("--db", type=Path, required=True)
    p_import.add_argument("--csv", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.command == "serve":
        serve(args.db, args.port, args.api_key)
        return 0
    body = args.csv.read_bytes()
    start = time.perf_counter()
    rows = import_csv(args.db, body)
    seconds = time.perf_counter() - start
    print(json.dumps({"rows": rows, "seconds": seconds, "peakRssKib": peak_rss_kib()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
