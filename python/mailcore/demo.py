"""The main job, end to end on a fresh machine: a local SMTP sink, the API and the sender
served on loopback, an account with credit, generated contacts imported as CSV over HTTP
(a few of them bouncing), a personalised campaign created with its cost estimate, sent
with a live progress bar, then its stats, the cost charged and where the mail landed."""

from __future__ import annotations

import csv
import io
import random
import shutil
from pathlib import Path
from typing import Any

import httpx
import msgspec
import trio
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .config import Settings
from .facade import Mailcore
from .rest.server import serve
from .smtp import Sink
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
        domain = "bounce.example.com" if i % 97 == 13 else "example.com"
        tags = [
            t
            for t, p in (("newsletter", 0.8), ("product-updates", 0.5), ("beta", 0.1))
            if rng.random() < p
        ]
        w.writerow(
            [
                f"user{i}@{domain}",
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
    maildir = path.parent / "maildir"
    await trio.to_thread.run_sync(lambda: shutil.rmtree(maildir, ignore_errors=True))
    sink = Sink(maildir=maildir, rules=[("*@bounce.example.com", 550, "5.1.1 no such user")])
    async with trio.open_nursery() as outer:
        smtp_port = await outer.start(sink.serve)
        settings = msgspec.structs.replace(settings, smtp_url=f"smtp://127.0.0.1:{smtp_port}")
        await _main_job(settings, n, path, sink)
        outer.cancel_scope.cancel()


async def _main_job(settings: Settings, n: int, path: Path, sink: Sink) -> None:
    async with Mailcore.open(settings) as mc, trio.open_nursery() as nursery:
        await nursery.start(mc.run_sender)
        binds = await nursery.start(serve, mc, "127.0.0.1", 0)
        base = binds[0]
        console.rule("[bold]mailcore demo")
        console.print(f"SMTP sink (mailcore sink) on {settings.smtp_url}; API on {base}")
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
            console.print(
                f"campaign {campaign['id']}: {campaign['audienceCount']} recipients, "
                f"estimated cost ${campaign['estimatedCost']:.2f}"
            )
            r = await client.post(f"/v1/mail/campaigns/{campaign['id']}/send")
            r.raise_for_status()
            sent = r.json()
            console.print(f"sending: hold {sent['cost']['holdId']} placed on the wallet")
            stats = await _follow(client, campaign["id"], sent["audienceCount"])
            wallet = (await client.get("/v1/wallet")).json()
        table = Table(title="campaign stats")
        table.add_column("")
        table.add_column("", justify="right")
        for key in (
            "status",
            "audienceCount",
            "delivered",
            "bounced",
            "deferred",
            "failed",
            "suppressed",
            "pending",
        ):
            table.add_row(key, str(stats[key]))
        console.print(table)
        cost = stats["cost"]
        console.print(
            f"charged ${cost['actualMicros'] / 1_000_000:.4f} "
            f"({stats['delivered']} delivered × $0.0003; "
            f"estimated ${cost['estimated']:.2f}); wallet balance ${wallet['balance']:.4f}, "
            f"nothing held: {wallet['holds'] == []}"
        )
        maildir = sink.maildir
        console.print(
            f"the sink accepted {sink.messages} messages; read them in {maildir}/new/ "
            f"(database: {path})"
        )
        nursery.cancel_scope.cancel()


async def _follow(client: httpx.AsyncClient, campaign_id: str, total: int) -> dict[str, Any]:
    with Progress(
        TextColumn("sending"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as bar:
        task = bar.add_task("send", total=total)
        with trio.fail_after(600):
            while True:
                stats: dict[str, Any] = (
                    await client.get(f"/v1/mail/campaigns/{campaign_id}/stats")
                ).json()
                bar.update(task, completed=total - stats["pending"] - stats["deferred"])
                if stats["status"] in ("sent", "cancelled"):
                    return stats
                await trio.sleep(0.1)
