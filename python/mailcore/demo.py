"""The main job, end to end on a fresh machine: the API served on loopback, an account
with credit, generated contacts imported as CSV over HTTP, a personalised campaign created
with its audience count and cost estimate."""

from __future__ import annotations

import csv
import io
import random
from pathlib import Path

import httpx
import trio
from rich.console import Console
from rich.table import Table

from .config import Settings
from .facade import Mailcore
from .rest.server import serve
from .store import sqlite_path

console = Console()

FIRST = ["Sarah", "Amir", "Lena", "Kofi", "Mei", "Jonas", "Ana", "Ravi", "Zoë", "Olu"]
LAST = ["Chen", "Haddad", "Novak", "Mensah", "Tanaka", "Berg", "Silva", "Iyer", "Dupont"]
COMPANIES = ["Acme Corp", "Globex", "Initech", "Umbrella", "Stark & Sons"]

HTML = """<html><body>
<p>Hi {{firstName | default: "there"}},</p>
<p>Here is what changed at {{customFields.company | default: "your company"}} this month.</p>
<p><a href="https://example.com/changelog">Read the changelog</a></p>
</body></html>"""


def generate_csv(n: int, seed: int = 7) -> bytes:
    rng = random.Random(seed)
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(["email", "firstName", "lastName", "tags", "company", "plan"])
    for i in range(n):
        tags = [
            t
            for t, p in (("newsletter", 0.8), ("product-updates", 0.5), ("beta", 0.1))
            if rng.random() < p
        ]
        w.writerow(
            [
                f"user{i}@example.com",
                rng.choice(FIRST),
                rng.choice(LAST),
                ";".join(tags),
                rng.choice(COMPANIES),
                rng.choice(["free", "pro", "enterprise"]),
            ]
        )
    w.writerow(["not-an-email", "Bad", "Row", "newsletter", "", ""])
    return out.getvalue().encode()


def fresh_database(settings: Settings) -> Path:
    """The demo starts from an empty database each run."""
    path = Path(sqlite_path(settings.database_url))
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return path


async def run_demo(settings: Settings, n: int) -> None:
    path = await trio.to_thread.run_sync(fresh_database, settings)
    async with Mailcore.open(settings) as mc, trio.open_nursery() as nursery:
        binds = await nursery.start(serve, mc, "127.0.0.1", 0)
        base = binds[0]
        console.rule("[bold]mailcore demo")
        console.print(f"API serving on {base}")
        account = await mc.accounts.create("Acme", credit_micros=10_000_000)
        console.print(f"account {account.account_id} with $10.00 credit (mailcore accounts create)")
        auth = {"Authorization": f"Bearer {account.api_key}"}
        async with httpx.AsyncClient(base_url=base, headers=auth, timeout=60) as client:
            body = generate_csv(n)
            t0 = trio.current_time()
            r = await client.post(
                "/v1/mail/contacts/import", content=body, headers={"Content-Type": "text/csv"}
            )
            r.raise_for_status()
            result = r.json()
            elapsed = trio.current_time() - t0
            console.print(
                f"imported {result['created']} contacts over HTTP in {elapsed:.2f}s; "
                f"{len(result['errors'])} row rejected: {result['errors'][0]['message']}"
            )
            r = await client.post(
                "/v1/mail/campaigns",
                json={
                    "name": "March Newsletter",
                    "subject": '{{firstName | default: "Hi"}}, what\'s new this month',
                    "preheader": "Product updates, tips, and a surprise",
                    "from": {"name": "Sarah at Acme", "email": "sarah@acme.com"},
                    "audience": {"tags": ["newsletter"]},
                    "content": {"html": HTML},
                },
            )
            r.raise_for_status()
            campaign = r.json()
            wallet = (await client.get("/v1/wallet")).json()
        table = Table(title="campaign (POST /v1/mail/campaigns)")
        for key in ("id", "name", "status", "audienceCount", "estimatedCost", "createdAt"):
            table.add_row(key, str(campaign[key]))
        console.print(table)
        console.print(
            f"wallet: balance ${wallet['balance']:.2f}, available ${wallet['available']:.2f}"
        )
        console.print(f"database: {path}; the API's contract: api/openapi.json")
        nursery.cancel_scope.cancel()
