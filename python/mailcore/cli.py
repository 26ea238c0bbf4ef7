"""The ``mailcore`` command."""

from __future__ import annotations

import logging
import sys
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Annotated, Any, TypeVar

import msgspec
import trio
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from .config import DEFAULT_PIPELINE_DEPTH, Settings
from .errors import MailcoreError, ValidationError
from .facade import Mailcore
from .pricing import parse_usd, usd
from .smtp.faults import SPEC_HELP as FAULTS_SPEC_HELP

T = TypeVar("T")

app = typer.Typer(help="mailcore: email campaigns with a Rust core.", no_args_is_help=True)
accounts_app = typer.Typer(help="Accounts and API keys.", no_args_is_help=True)
wallet_app = typer.Typer(help="Wallet funds.", no_args_is_help=True)
contacts_app = typer.Typer(help="Contacts.", no_args_is_help=True)
bench_app = typer.Typer(help="Measure and tune.", no_args_is_help=True)
app.add_typer(accounts_app, name="accounts")
app.add_typer(wallet_app, name="wallet")
app.add_typer(contacts_app, name="contacts")
app.add_typer(bench_app, name="bench")

console = Console(stderr=True)
ConfigOption = Annotated[
    Path | None, typer.Option("--config", help="mailcore.toml (default: ./mailcore.toml)")
]


def _settings(config: Path | None, **overrides: Any) -> Settings:
    return Settings.load(config, **{k: v for k, v in overrides.items() if v is not None})


def _run(settings: Settings, fn: Callable[[Mailcore], Awaitable[T]]) -> T:
    async def main() -> T:
        async with Mailcore.open(settings) as mc:
            return await fn(mc)

    try:
        return trio.run(main)
    except MailcoreError as exc:
        console.print(f"[red]error[/red] ({exc.code}): {exc.message}")
        raise typer.Exit(2) from None


def _usd_arg(text: str) -> int:
    try:
        return parse_usd(text)
    except Exception as exc:
        raise typer.BadParameter(f"{text!r} is not an amount in USD (e.g. 25 or 12.50)") from exc


@app.command()
def serve(
    config: ConfigOption = None,
    host: Annotated[str | None, typer.Option(help="bind address")] = None,
    port: Annotated[int | None, typer.Option(help="port (the API, or only /v1/health)")] = None,
    role: Annotated[
        str,
        typer.Option(
            help="what this process does: api, sender, webhooks, several separated by "
            "commas, or all. Scale each part with more processes on one PostgreSQL "
            "database; a process without the api role serves only /v1/health."
        ),
    ] = "all",
) -> None:
    """Serve the REST API (hypercorn, Trio worker), send campaigns and deliver webhooks; a
    restart resumes every campaign that was sending."""
    from .node import parse_roles, tune_sender_process
    from .rest.server import run

    roles = parse_roles(role)
    if "sender" in roles:
        tune_sender_process()
    settings = _settings(config, host=host, port=port)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    what = "API" if "api" in roles else "health"
    console.print(
        f"mailcore ({', '.join(sorted(roles))}) serving {what} on "
        f"http://{settings.host}:{settings.port}"
    )
    try:
        trio.run(partial(run, settings, roles=roles))
    except MailcoreError as exc:
        console.print(f"[red]error[/red] ({exc.code}): {exc.message}")
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        console.print("stopped")


@app.command()
def migrate(config: ConfigOption = None) -> None:
    """Bring the database (SQLite or PostgreSQL, from MAILCORE_DATABASE_URL) to the
    current schema, then print its version. Safe to run on a live deployment and from
    several nodes at once (PostgreSQL migrates under an advisory lock)."""
    from .store import store_from_url

    settings = _settings(config)

    async def go() -> tuple[int, int]:
        store = store_from_url(settings.database_url, pool_size=1)
        await store.open()  # applies what is pending
        await store.close()
        return store.migrated_from, store.schema_version

    try:
        before, after = trio.run(go)
    except MailcoreError as exc:
        console.print(f"[red]error[/red] ({exc.code}): {exc.message}")
        raise typer.Exit(2) from None
    applied = after - before
    console.print(
        f"schema version {after}"
        + (f" ({applied} migration{'s' * (applied != 1)} applied)" if applied else " (up to date)")
    )


@app.command()
def sink(
    port: Annotated[int, typer.Option(help="port to listen on")] = 2525,
    host: Annotated[str, typer.Option(help="bind address")] = "127.0.0.1",
    maildir: Annotated[Path | None, typer.Option(help="write each message to this maildir")] = None,
    reject: Annotated[
        list[str] | None,
        typer.Option(help="PATTERN=CODE[ TEXT]: answer matching recipients (e.g. *@b.test=550)"),
    ] = None,
    faults: Annotated[
        str | None,
        typer.Option(help=f"inject seeded faults; SPEC is {FAULTS_SPEC_HELP}", metavar="SPEC"),
    ] = None,
    log: Annotated[
        Path | None,
        typer.Option(
            help="write every connection and transaction (time, connection id, client, "
            "recipients with attempt and reply, final reply) as JSON lines, then a summary "
            "(max concurrent connections, messages per recipient)"
        ),
    ] = None,
    chunking: Annotated[bool, typer.Option(help="offer CHUNKING (BDAT)")] = True,
    pipelining: Annotated[bool, typer.Option(help="offer PIPELINING")] = True,
    tls_cert: Annotated[
        Path | None,
        typer.Option(help="PEM certificate (and key, or see --tls-key): offer STARTTLS"),
    ] = None,
    tls_key: Annotated[Path | None, typer.Option(help="PEM private key of --tls-cert")] = None,
    strip_starttls: Annotated[
        bool,
        typer.Option(help="never offer STARTTLS, as a downgrade attacker stripping it would"),
    ] = False,
) -> None:
    """A development SMTP server that accepts mail, counts it and can refuse recipients;
    with --faults, a fault-injecting one for testing senders."""
    from .smtp.sink import sink_command

    try:
        sink_command(
            port,
            host,
            maildir,
            reject or [],
            faults=faults,
            log=log,
            chunking=chunking,
            pipelining=pipelining,
            strip_starttls=strip_starttls,
            tls_cert=tls_cert,
            tls_key=tls_key,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


@app.command()
def openapi(
    output: Annotated[Path, typer.Option(help="where to write")] = Path("api/openapi.json"),
) -> None:
    """Write the OpenAPI document generated from the code."""
    from .rest.openapi import openapi_json

    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_bytes(openapi_json())
    console.print(f"wrote {output}")


@app.command()
def demo(
    contacts: Annotated[int, typer.Option(help="contacts to generate")] = 5_000,
    database: Annotated[str, typer.Option(help="database URL")] = "sqlite:///./demo-out/demo.db",
) -> None:
    """The main job: an account, contacts imported over the API, a campaign with its cost."""
    from .demo import run_demo

    trio.run(run_demo, _settings(None, database_url=database), contacts)


@accounts_app.command("create")
def accounts_create(
    name: Annotated[str, typer.Option(help="account name")],
    credit: Annotated[str, typer.Option(help="opening credit in USD")] = "0",
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    config: ConfigOption = None,
) -> None:
    """Create an account and print its id and API key (shown only once)."""
    micros = _usd_arg(credit)
    created = _run(_settings(config), lambda mc: mc.accounts.create(name, credit_micros=micros))
    if as_json:
        sys.stdout.write(msgspec.json.encode(created).decode() + "\n")
    else:
        console.print(f"account [bold]{created.account_id}[/bold]")
        console.print(f"API key [bold]{created.api_key}[/bold] (shown once: keep it)")


@wallet_app.command("credit")
def wallet_credit(
    account_id: str,
    amount: Annotated[str, typer.Argument(help="USD to add (negative to remove)")],
    config: ConfigOption = None,
) -> None:
    """Add funds to an account's wallet."""
    micros = _usd_arg(amount)
    balance = _run(
        _settings(config), lambda mc: mc.account(account_id).wallet.credit(micros, "cli")
    )
    console.print(f"balance {usd(balance, 6):.6f} USD")


@wallet_app.command("show")
def wallet_show(account_id: str, config: ConfigOption = None) -> None:
    """Print the wallet as JSON."""
    wallet = _run(_settings(config), lambda mc: mc.account(account_id).wallet.get())
    sys.stdout.write(msgspec.json.encode(wallet).decode() + "\n")


@contacts_app.command("import")
def contacts_import(
    file: Annotated[Path, typer.Argument(help="a .csv or .json file", exists=True, dir_okay=False)],
    account: Annotated[str, typer.Option(help="account id")],
    config: ConfigOption = None,
) -> None:
    """Import contacts (upsert by email) with a progress bar; prints the result as JSON."""
    data = file.read_bytes()
    is_json = file.suffix.lower() == ".json"
    rows = data.count(b"\n") if not is_json else data.count(b'"email"')

    async def go(mc: Mailcore) -> Any:
        scope = mc.account(account)
        await scope.wallet.get()  # NotFound for an unknown account, before any work
        with Progress(
            TextColumn("importing"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        ) as bar:
            task = bar.add_task("import", total=max(rows, 1))
            done = lambda n: bar.update(task, completed=n)  # noqa: E731
            if is_json:
                return await scope.contacts.import_json(data, done)
            return await scope.contacts.import_csv(data, done)

    result = _run(_settings(config), go)
    sys.stdout.write(msgspec.json.encode(result).decode() + "\n")


@bench_app.command("smtp")
def bench_smtp(
    url: Annotated[
        str, typer.Option(help="the relay: smtp://[user:pass@]host[:port][?tls=...]")
    ] = "smtp://127.0.0.1:2525",
    connections: Annotated[
        str, typer.Option(help="connection counts to try, comma-separated")
    ] = "1,8,32,64",
    size: Annotated[str, typer.Option(help="message size (bytes; k = 1024, m = 1024²)")] = "10k",
    messages: Annotated[
        int | None, typer.Option(help="messages per setting (default 1,000)")
    ] = None,
    duration: Annotated[
        float | None, typer.Option(help="seconds per setting, instead of --messages")
    ] = None,
    mail_from: Annotated[
        str,
        typer.Option(
            "--from", help="envelope sender and From: (a real relay may refuse the default)"
        ),
    ] = "bench@mailcore.invalid",
    rcpt_to: Annotated[
        str | None,
        typer.Option("--to", help="recipient of every message; required unless on loopback"),
    ] = None,
    tls: Annotated[
        str | None,
        typer.Option(help="none|opportunistic|required|implicit (default: the URL's)"),
    ] = None,
    ca_file: Annotated[
        Path | None, typer.Option(help="CA bundle to verify the relay with (PEM)")
    ] = None,
    pipeline_depth: Annotated[
        int,
        typer.Option(
            help="messages pipelined per round trip when the relay offers PIPELINING "
            "(the sender's pipeline_depth; 1: one after the other)"
        ),
    ] = DEFAULT_PIPELINE_DEPTH,
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
) -> None:
    """Send test messages through a relay at several connection counts: messages/s,
    latency and errors per setting, and the smtp_connections to use."""
    from rich.console import Console as RichConsole

    from . import benchsmtp

    try:
        options = benchsmtp.BenchOptions(
            url=url,
            connections=benchsmtp.parse_connections(connections),
            size=benchsmtp.parse_size(size),
            messages=messages,
            duration=duration,
            mail_from=mail_from,
            rcpt_to=rcpt_to,
            tls=benchsmtp.parse_tls(tls),
            ca_file=str(ca_file) if ca_file is not None else None,
            pipeline_depth=pipeline_depth,
        )
        config = benchsmtp.relay_config(options.url, options.tls)
        benchsmtp.recipient_for(options, config)  # refuses before anything is sent
    except benchsmtp.BenchUsageError as exc:
        console.print(f"[red]error[/red]: {exc}")
        raise typer.Exit(2) from None

    def progress(r: benchsmtp.SettingResult) -> None:
        console.print(
            f"  {r.connections:>4} connections: {r.delivered:,}/{r.attempted:,} accepted, "
            f"{r.messages_per_second:,.0f} msg/s"
        )

    per = (
        f"{duration:g} s"
        if duration is not None
        else f"{messages or benchsmtp.DEFAULT_MESSAGES:,} messages"
    )
    console.print(f"bench smtp: {benchsmtp.redacted(url)}, {per} per setting")
    report = trio.run(partial(benchsmtp.run_bench, options, progress=progress))
    if as_json:
        sys.stdout.write(msgspec.json.encode(report).decode() + "\n")
    else:
        RichConsole().print(benchsmtp.render_table(report))
    if report.recommended is None:
        raise typer.Exit(1)


def main() -> None:
    try:
        app()
    except ValidationError as exc:
        console.print(f"[red]error[/red]: {exc.message}")
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
