"""The ``mailcore`` command, run as a user would (a subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

Cli = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def mailcore(tmp_path: Path, database_url: str) -> Cli:
    """Run ``mailcore ARGS…`` on the test's database (each store in turn)."""

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return _mailcore(tmp_path, database_url, *args)

    return run


def _mailcore(cwd: Path, database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MAILCORE_DATABASE_URL": database_url}
    return subprocess.run(
        [sys.executable, "-m", "mailcore.cli", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_accounts_wallet_and_import(tmp_path: Path, mailcore: Cli) -> None:
    r = mailcore("accounts", "create", "--name", "Acme", "--credit", "12.5", "--json")
    assert r.returncode == 0, r.stderr
    created = json.loads(r.stdout)
    account_id, api_key = created["accountId"], created["apiKey"]
    assert account_id.startswith("acc_") and api_key.startswith("mc_")

    r = mailcore("wallet", "credit", account_id, "0.0003")
    assert r.returncode == 0, r.stderr
    wallet = json.loads(mailcore("wallet", "show", account_id).stdout)
    assert wallet["balanceMicros"] == 12_500_300

    csv = tmp_path / "c.csv"
    csv.write_text("email,firstName,tags\na@x.com,A,news\nbad,B,news\nb@x.com,B,news;vip\n")
    r = mailcore("contacts", "import", str(csv), "--account", account_id)
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert (result["created"], result["updated"], len(result["errors"])) == (2, 0, 1)
    js = tmp_path / "c.json"
    js.write_text(json.dumps({"contacts": [{"email": "a@x.com", "lastName": "Z"}]}))
    result = json.loads(mailcore("contacts", "import", str(js), "--account", account_id).stdout)
    assert (result["created"], result["updated"]) == (0, 1)


def test_errors_are_clear_and_nonzero(mailcore: Cli) -> None:
    r = mailcore("wallet", "credit", "acc_nope", "5")
    assert r.returncode == 2 and "not_found" in r.stderr
    r = mailcore("accounts", "create", "--name", "x", "--credit", "ten")
    assert r.returncode != 0 and "not an amount" in r.stderr
    created = json.loads(mailcore("accounts", "create", "--name", "x", "--json").stdout)
    r = mailcore("wallet", "credit", "--", created["accountId"], "-1")
    assert r.returncode == 2 and "insufficient_funds" in r.stderr


def test_migrate_brings_the_database_to_the_current_schema(mailcore: Cli) -> None:
    from mailcore.store.schema import SQLITE_MIGRATIONS

    r = mailcore("migrate")
    assert r.returncode == 0, r.stderr
    assert f"schema version {len(SQLITE_MIGRATIONS)}" in r.stderr
    r = mailcore("migrate")
    assert r.returncode == 0 and "(up to date)" in r.stderr, r.stderr


def test_serve_refuses_an_unknown_role(mailcore: Cli) -> None:
    r = mailcore("serve", "--role", "api,mailer")
    assert r.returncode == 2 and "unknown role mailer" in r.stderr, r.stderr


def test_sink_command_accepts_counts_and_refuses_by_rule(tmp_path: Path) -> None:
    """``mailcore sink`` as a user runs it: mail lands in the maildir, a rule refuses."""
    import signal
    import time

    import trio

    from mailcore.smtp import RelayConfig, SmtpConnection
    from tests.peers import free_port

    port = free_port()
    maildir = tmp_path / "mail"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mailcore.cli",
            "sink",
            "--port",
            str(port),
            "--maildir",
            str(maildir),
            "--reject",
            "*@bounce.test=550",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:

        async def send() -> tuple[str, str]:
            config = RelayConfig.from_url(f"smtp://127.0.0.1:{port}?tls=none")
            with trio.fail_after(20):
                while True:
                    try:
                        conn = await SmtpConnection.open(config)
                        break
                    except Exception:
                        await trio.sleep(0.1)
            async with conn:
                ok = await conn.send("a@x.com", ["b@x.com"], b"Subject: hi\r\n\r\nbody\r\n")
                no = await conn.send("a@x.com", ["c@bounce.test"], b"Subject: x\r\n\r\nx\r\n")
            return ok.status("b@x.com"), no.status("c@bounce.test")

        assert trio.run(send) == ("delivered", "bounced")
        deadline = time.monotonic() + 10
        while not list((maildir / "new").glob("*")) and time.monotonic() < deadline:
            time.sleep(0.05)
        (stored,) = list((maildir / "new").glob("*"))
        assert b"Subject: hi" in stored.read_bytes()
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=10)
