"""A throwaway PostgreSQL server for the tests, and fresh databases on it.

``Cluster.start()`` runs ``initdb`` into a temporary directory and starts the server on a
free loopback port (as the unprivileged ``postgres`` user when the tests run as root:
initdb and postgres refuse root). With ``MAILCORE_TEST_POSTGRES_URL`` set, that server is
used instead (its URL must allow CREATE DATABASE). Each test gets a fresh database copied
from a template that was migrated once, so tests are isolated and start in milliseconds.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import trio

from mailcore.store.postgres import PostgresStore
from tests.peers import free_port

TEMPLATE = "mailcore_template"
NO_DURABILITY = ("fsync=off", "synchronous_commit=off", "full_page_writes=off")


def _bindir() -> Path:
    """The server binaries: on PATH, else Debian's /usr/lib/postgresql/N/bin (newest)."""
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: (
            int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0
        ),
    )
    if not found:
        raise RuntimeError(
            "PostgreSQL server binaries not found (initdb): install PostgreSQL "
            "(Debian: apt-get install postgresql), or set MAILCORE_TEST_POSTGRES_URL, "
            "or run the SQLite half only with `pytest --store sqlite`"
        )
    return Path(found[-1]).parent


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, ""))


@dataclass
class Cluster:
    admin_url: str  # a database to connect to for CREATE/DROP DATABASE
    datadir: Path | None = None  # set when we started the server ourselves
    bindir: Path | None = None
    user: str | None = None
    prefix: str = field(default_factory=lambda: f"mc{os.getpid()}_")
    _names: itertools.count[int] = field(default_factory=itertools.count)

    @classmethod
    def start(cls, durable: bool = False) -> Cluster:
        """``durable``: PostgreSQL's default durability (fsync, synchronous_commit and
        full_page_writes on), for benchmarks whose figures must include the cost of a
        commit; always a server of our own then (MAILCORE_TEST_POSTGRES_URL's settings are
        unknown)."""
        url = None if durable else os.environ.get("MAILCORE_TEST_POSTGRES_URL")
        cluster = cls(admin_url=url) if url else cls._initdb(durable)
        try:
            cluster._make_template()
        except BaseException:
            cluster.stop()
            raise
        return cluster

    @classmethod
    def _initdb(cls, durable: bool = False) -> Cluster:
        bindir = _bindir()
        user = None
        if os.geteuid() == 0:
            user = "postgres"
            try:
                pwd.getpwnam(user)
            except KeyError:
                raise RuntimeError(
                    "running as root and there is no 'postgres' user to run the test "
                    "server as (Debian's postgresql package creates it)"
                ) from None
        base = Path(tempfile.mkdtemp(prefix="mailcore-pg-"))
        datadir = base / "data"
        if user is not None:
            shutil.chown(base, user)
        port = free_port()
        cls._as(
            user,
            [
                str(bindir / "initdb"),
                "-D",
                str(datadir),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ],
        )
        # A test server: durability off (nothing here must survive a crash of the
        # machine), enough connections for several nodes per test.
        no_durability = () if durable else NO_DURABILITY
        options = " ".join(
            f"-c {o}"
            for o in (
                "listen_addresses=127.0.0.1",
                f"port={port}",
                f"unix_socket_directories={base}",
                *no_durability,
                "max_connections=300",
                "shared_buffers=128MB",
            )
        )
        cls._as(
            user,
            [
                str(bindir / "pg_ctl"),
                "-D",
                str(datadir),
                "-l",
                str(base / "log"),
                "-w",
                "-t",
                "60",
                "-o",
                options,
                "start",
            ],
        )
        return cls(
            admin_url=f"postgresql://postgres@127.0.0.1:{port}/postgres",
            datadir=datadir,
            bindir=bindir,
            user=user,
        )

    @staticmethod
    def _as(user: str | None, argv: list[str]) -> None:
        if user is not None:
            argv = ["runuser", "-u", user, "--", *argv]
        # From / : the unprivileged user may not be allowed into the caller's directory.
        done = subprocess.run(argv, cwd="/", stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if done.returncode != 0:
            raise RuntimeError(
                f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.decode()[-2000:]}"
            )

    def _admin(self, sql: str) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(sql.encode())

    def _make_template(self) -> None:
        self._admin(f"DROP DATABASE IF EXISTS {TEMPLATE}_{self.prefix} WITH (FORCE)")
        self.template = f"{TEMPLATE}_{self.prefix}"
        self._admin(f"CREATE DATABASE {self.template}")

        async def migrate() -> None:
            store = PostgresStore(_with_database(self.admin_url, self.template), pool_size=1)
            await store.open()
            await store.close()

        trio.run(migrate)

    def create_database(self) -> str:
        """A fresh, migrated database; its URL."""
        name = f"{self.prefix}{next(self._names)}"
        self._admin(f"CREATE DATABASE {name} TEMPLATE {self.template}")
        return _with_database(self.admin_url, name)

    def drop_database(self, url: str) -> None:
        name = urlsplit(url).path.lstrip("/")
        self._admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def server_pid(self) -> int | None:
        """The postmaster's pid, when we started the server and it runs."""
        if self.datadir is None:
            return None
        try:
            return int((self.datadir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (FileNotFoundError, ValueError):
            return None

    def stop(self) -> None:
        if self.datadir is None:
            if hasattr(self, "template"):
                self._admin(f"DROP DATABASE IF EXISTS {self.template} WITH (FORCE)")
            return
        assert self.bindir is not None
        self._as(
            self.user,
            [str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-m", "immediate", "-w", "stop"],
        )
        shutil.rmtree(self.datadir.parent, ignore_errors=True)
