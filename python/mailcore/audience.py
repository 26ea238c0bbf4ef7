"""Per-account audience indexes, kept in step with the store by revision catch-up.

Every contact write bumps the account's contact revision in the same transaction; before
an index answers, it applies the rows changed since the revision it has seen. Writers never
touch the index, so it stays right whichever process or path wrote (the import, the API,
another node sharing the database).
"""

from __future__ import annotations

from array import array

import anyio
import anyio.to_thread

from . import _engine
from .store import CONTACT_STATUS_CODES, ContactChanges, Store

STATUS_CODES = CONTACT_STATUS_CODES
SUBSCRIBED = [STATUS_CODES["subscribed"]]


class _AccountIndex:
    __slots__ = ("index", "lock", "revision")

    def __init__(self) -> None:
        self.index = _engine.AudienceIndex()
        self.revision = 0
        self.lock = anyio.Lock()


def _apply(index: _engine.AudienceIndex, changes: ContactChanges) -> None:
    for chunk in changes.chunks:
        index.upsert_packed(chunk.seqs, chunk.statuses, chunk.tags_json)


class AudienceIndexes:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._accounts: dict[str, _AccountIndex] = {}

    async def current(self, account_id: str) -> _engine.AudienceIndex:
        """The account's index, caught up with every committed contact write."""
        entry = self._accounts.get(account_id)
        if entry is None:
            entry = self._accounts.setdefault(account_id, _AccountIndex())
        async with entry.lock:
            changes = await self._store.contact_changes(account_id, entry.revision)
            if changes.revision != entry.revision:
                if changes.chunks:
                    # In a worker thread: a first load is a few hundred ms of engine work
                    # (GIL released), which must not stall the event loop. No query can run
                    # meanwhile: callers use the index right after `current` returns.
                    await anyio.to_thread.run_sync(_apply, entry.index, changes)
                for seq in changes.removed:
                    entry.index.remove(seq)
                entry.revision = changes.revision
        return entry.index

    async def count(self, account_id: str, tags: list[str], exclude_tags: list[str]) -> int:
        """Subscribed contacts having any of ``tags`` and none of ``exclude_tags``."""
        index = await self.current(account_id)
        return index.count(any_tags=tags, none_tags=exclude_tags, statuses=SUBSCRIBED)

    async def members(
        self, account_id: str, tags: list[str], exclude_tags: list[str]
    ) -> array[int]:
        index = await self.current(account_id)
        ids = array("I")
        ids.frombytes(index.members(any_tags=tags, none_tags=exclude_tags, statuses=SUBSCRIBED))
        return ids
