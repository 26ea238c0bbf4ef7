"""Shared fixtures: a Mailcore on a fresh SQLite file, the API served by hypercorn on
loopback, and HTTP clients authenticated as fresh accounts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import trio

from mailcore import Mailcore, Settings
from mailcore.rest.server import serve


@pytest.fixture
def anyio_backend() -> str:
    return "trio"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings.load(
        env={},
        database_url=f"sqlite:///{tmp_path}/mailcore.db",
        secret_key="test-secret",
    )


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
