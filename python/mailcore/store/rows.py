"""Rows as both stores read them back (the SQL differs, the rows do not)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
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
    first_attempt_at)`` each, in contact order, with their contacts' fields (``contacts``
    by seq: email, first name, last name, custom fields as JSON, status). A contact
    deleted since the plan has none: the dispatcher records it as suppressed."""
    work: list[RecipientWork] = []
    for seq, attempts, first_attempt_at in sorted(claimed):
        email, first, last, fields, status = contacts.get(seq, _NO_CONTACT)
        work.append(
            RecipientWork(
                contact_seq=seq,
                attempts=attempts,
                email=email,
                first_name=first,
                last_name=last,
                custom_fields=decode_fields(fields) if fields is not None else {},
                contact_status=status,
                first_attempt_at=first_attempt_at,
            )
        )
    return work
