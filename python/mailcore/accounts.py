"""Accounts and API keys. Keys are random, shown once, and stored only as a SHA-256 hash
(a key carries ~190 bits, so a fast hash is as strong as a slow one here)."""

from __future__ import annotations

import hashlib
import secrets
import time
from typing import TYPE_CHECKING

from .errors import Unauthorized, ValidationError
from .ids import iso, new_id
from .models import AccountCreated
from .store import AccountRow
from .validation import clean_text

if TYPE_CHECKING:
    from .facade import Mailcore

KEY_PREFIX = "mc_"


def hash_key(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


def new_api_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(24)


# A key's account is remembered this long, so most requests skip a database round trip.
AUTH_CACHE_SECONDS = 60.0
AUTH_CACHE_SIZE = 10_000


class Accounts:
    def __init__(self, mc: Mailcore) -> None:
        self._mc = mc
        self._auth_cache: dict[str, tuple[str, float]] = {}

    async def create(self, name: str, *, credit_micros: int = 0) -> AccountCreated:
        """Create an account with a wallet and one API key (returned only here)."""
        clean = clean_text(name, "name")
        if clean is None:
            raise ValidationError("an account needs a name", field="name")
        if credit_micros < 0:
            raise ValidationError("the opening credit cannot be negative", field="credit")
        now = iso(self._mc.clock())
        account = AccountRow(id=new_id("acc"), name=clean, created_at=now)
        api_key = new_api_key()
        await self._mc.store.create_account(account, hash_key(api_key), api_key[:8])
        if credit_micros:
            await self._mc.store.credit(account.id, credit_micros, "opening credit", now)
        return AccountCreated(account_id=account.id, api_key=api_key)

    async def create_api_key(self, account_id: str) -> str:
        api_key = new_api_key()
        await self._mc.store.add_api_key(
            account_id, hash_key(api_key), api_key[:8], iso(self._mc.clock())
        )
        return api_key

    async def authenticate(self, api_key: str | None) -> str:
        """The account id a key belongs to; Unauthorized for a missing or unknown key."""
        if not api_key or not api_key.startswith(KEY_PREFIX) or len(api_key) > 200:
            raise Unauthorized("a valid API key is required (Authorization: Bearer <key>)")
        key_hash = hash_key(api_key)
        now = time.monotonic()
        cached = self._auth_cache.get(key_hash)
        if cached is not None and cached[1] > now:
            return cached[0]
        account_id = await self._mc.store.account_for_key(key_hash)
        if account_id is None:
            raise Unauthorized("a valid API key is required (Authorization: Bearer <key>)")
        if len(self._auth_cache) >= AUTH_CACHE_SIZE:
            self._auth_cache.clear()
        self._auth_cache[key_hash] = (account_id, now + AUTH_CACHE_SECONDS)
        return account_id
