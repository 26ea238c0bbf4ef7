"""Rows as both stores read them back (the SQL differs, the rows do not)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from operator import itemgetter
from typing import Any

import msgspec

from .base import RecipientWork

decode_fields = msgspec.json.Decoder(dict[str, str | int | float | bool]).decode
"""A contact's custom fields from their stored JSON."""

_NO_CONTACT: tuple[None, None, None, None, None] = (None, None, None, None, None)


def claimed_work(
    claimed: Iterable[tuple[int, int, float | None]],
    contacts: Mapping[int, Sequence[Any]],
) -> list[RecipientWork]:
    """The work of the recipients a claim leased, ``(contact_seq, attempts,
    first_attempt_at)`` each, with their contacts' fields (``contacts`` by seq: email,
    first name, last name, custom fields as JSON, status); see :func:`leased_work`."""
    return leased_work(
        (seq, attempts, first, *contacts.get(seq, _NO_CONTACT)) for seq, attempts, first in claimed
    )


def leased_work(rows: Iterable[Sequence[Any]]) -> list[RecipientWork]:
    """The work of leased recipients in contact order, from rows of ``(contact_seq,
    attempts, first_attempt_at, email, first name, last name, custom fields as JSON,
    status)``; ``first_attempt_at`` as a number or its exact text. A contact deleted since
    the plan has all its fields null: the dispatcher records it as suppressed."""
    in_order = sorted(rows, key=itemgetter(0))
    return [
        RecipientWork(
            contact_seq=seq,
            attempts=attempts,
            email=email,
            first_name=first_name,
            last_name=last_name,
            custom_fields=decode_fields(fields) if fields is not None else {},
            contact_status=status,
            first_attempt_at=None if first is None else float(first),
        )
        for seq, attempts, first, email, first_name, last_name, fields, status in in_order
    ]
