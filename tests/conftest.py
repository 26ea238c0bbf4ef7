"""Shared fixtures: a fresh database on each store (every test that asks for one runs on
SQLite and on PostgreSQL), a Mailcore on it, the API served by hypercorn on loopback, and
HTTP clients authenticated as fresh accounts.

``--store sqlite`` / ``--store postgres`` (or ``MAILCORE_TEST_STORES=sqlite``) runs one
half only. The PostgreSQL server is started once per session (see tests/pg.py) or taken
from ``MAILCORE_TEST_POSTGRES_URL``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass

import httpx
import pytest
import trio

from mailcore import Mailcore, Settings
from mailcore.rest.server import serve
from tests.pg import Cluster

STORES = ("sqlite", "postgres")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--store",
        action="append",
        choices=STORES,
        help="run the store-touching tests on this store only (repeatable; default: "
        "both, or MAILCORE_TEST_STORES=sqlite,postgres)",
    )


def selected_stores(config: pytest.Config) -> list[str]:
    chosen = config.getoption("--store") or [
        s.strip() for s in os.environ.get("MAILCORE_TEST_STORES", ",".join(STORES)).split(",")
    ]
    unknown = set(chosen) - set(STORES)
    if unknown:
        raise pytest.UsageError(f"unknown store(s) {sorted(unknown)}; expected {STORES}")
    return [s for s in STORES if s in chosen]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # Every test that needs a database (directly or through mc, api, tenant, settings...)
    # runs once per store: test_x[sqlite], test_x[postgres].
    # @pytest.mark.stores("postgres"): a test that only makes sense on some stores (several
    # nodes need PostgreSQL).
    if "store_kind" in metafunc.fixturenames:
        stores = selected_stores(metafunc.config)
        only = metafunc.definition.get_closest_marker("stores")
        if only is not None:
            stores = [s for s in stores if s in only.args]
        metafunc.parametrize("store_kind", stores)


@pytest.fixture
def anyio_backend() -> str:
    return "trio"


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    cluster = Cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def new_database_url(
    store_kind: str, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Callable[[], str]]:
    """Makes fresh, empty databases on the test's store (several per test: hypothesis
    examples, two-process tests); PostgreSQL ones are dropped after the test."""
    made: list[str] = []
    cluster: Cluster | None = (
        request.getfixturevalue("pg_cluster") if store_kind == "postgres" else None
    )

    def make() -> str:
        if cluster is None:
            return f"sqlite:///{tmp_path_factory.mktemp('db')}/mailcore.db"
        url = cluster.create_database()
        made.append(url)
        return url

    yield make
    for url in made:
        assert cluster is not None
        cluster.drop_database(url)


@pytest.fixture
def database_url(new_database_url: Callable[[], str]) -> str:
    return new_database_url()


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings.load(env={}, database_url=database_url, secret_key="test-secret")


@pytest.fixture
async def mc(settings: Settings) -> AsyncIterator[Mailcore]:
    async with Mailcore.open(settings) as opened:
        yield opened


@dataclass
class Api:
    base_url: str
    mc: Mailcore

    async def account(self, credit_micros: int = 10_000_000) -> Tenant:
        created = await self.mc.accounts.create("tenant", credit_micros=credit_micros)
        client = httpx.AsyncClient(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {created.api_key}"},
            timeout=60,
        )
        return Tenant(account_id=created.account_id, api_key=created.api_key, http=client)

    def anonymous(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.base_url, timeout=60)


@dataclass
class Tenant:
    account_id: str
    api_key: str
    http: httpx.AsyncClient


@pytest.fixture
async def api(mc: Mailcore) -> AsyncIterator[Api]:
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(serve, mc, "127.0.0.1", 0)
        yield Api(base_url=binds[0], mc=mc)
        nursery.cancel_scope.cancel()


@pytest.fixture
async def tenant(api: Api) -> AsyncIterator[Tenant]:
    t = await api.account()
    async with t.http:
        yield t
