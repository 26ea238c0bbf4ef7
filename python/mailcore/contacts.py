"""Contacts: create, read, update, delete, upsert and bulk import (CSV or JSON)."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
import msgspec

from .errors import NotFound, ValidationError
from .ids import decode_cursor, encode_cursor, iso, new_id
from .models import (
    Contact,
    ContactCreate,
    ContactPage,
    ContactStatus,
    ContactUpdate,
    ContactUpsertResult,
    ImportResult,
    ImportRowError,
)
from .store import ContactFilter, ContactRow
from .validation import (
    MAX_TAGS,
    clean_custom_fields,
    clean_tags,
    clean_text,
    normalize_email,
)

if TYPE_CHECKING:
    from .facade import Mailcore

STATUSES: tuple[ContactStatus, ...] = ("subscribed", "unsubscribed", "bounced", "complained")
MAX_PAGE = 1000
DEFAULT_PAGE = 50

# CSV header names (compared case-insensitively, ignoring '_', '-' and spaces) for the
# contact's own fields; every other column becomes a custom field.
_CSV_FIELDS = {
    "email": "email",
    "emailaddress": "email",
    "firstname": "first_name",
    "lastname": "last_name",
    "tags": "tags",
    "status": "status",
}

ProgressCallback = Callable[[int], None]

_decode_create = msgspec.json.Decoder(ContactCreate).decode


def to_wire(row: ContactRow) -> Contact:
    return Contact(
        id=row.id,
        email=row.email,
        first_name=row.first_name,
        last_name=row.last_name,
        tags=row.tags,
        custom_fields=row.custom_fields,
        status=row.status,  # type: ignore[arg-type]  # the store only holds valid statuses
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _merge_upsert(explicit_status: set[str]) -> Callable[[ContactRow, ContactRow], ContactRow]:
    """The upsert rule: given names overwrite, custom fields merge, tags are added, and a
    status is applied only if it does not re-subscribe someone who left (an import must
    never undo an unsubscribe, a bounce or a complaint)."""

    def merge(old: ContactRow, new: ContactRow) -> ContactRow:
        tags = old.tags + [t for t in new.tags if t not in old.tags]
        if len(tags) > MAX_TAGS:
            raise ValidationError(f"a contact has at most {MAX_TAGS} tags", field="tags")
        status = old.status
        if new.email in explicit_status and (
            old.status == "subscribed" or new.status != "subscribed"
        ):
            status = new.status
        return ContactRow(
            seq=old.seq,
            id=old.id,
            account_id=old.account_id,
            email=old.email,
            first_name=new.first_name if new.first_name is not None else old.first_name,
            last_name=new.last_name if new.last_name is not None else old.last_name,
            tags=tags,
            custom_fields={**old.custom_fields, **new.custom_fields},
            status=status,
            created_at=old.created_at,
            updated_at=new.updated_at,
        )

    return merge


class Contacts:
    def __init__(self, mc: Mailcore, account_id: str) -> None:
        self._mc = mc
        self.account_id = account_id

    # -- one contact ---------------------------------------------------------------

    def _row(self, body: ContactCreate, now: str) -> ContactRow:
        if body.status is not None and body.status not in STATUSES:
            raise ValidationError(f"status must be one of {', '.join(STATUSES)}", field="status")
        return ContactRow(
            seq=0,
            id=new_id("con"),
            account_id=self.account_id,
            email=normalize_email(body.email),
            first_name=clean_text(body.first_name, "firstName"),
            last_name=clean_text(body.last_name, "lastName"),
            tags=clean_tags(body.tags),
            custom_fields=clean_custom_fields(body.custom_fields),
            status=body.status or "subscribed",
            created_at=now,
            updated_at=now,
        )

    async def create(self, body: ContactCreate) -> Contact:
        """Create a contact; DuplicateContact (409, with ``existingId``) if the email is taken."""
        row = self._row(body, iso(self._mc.clock()))
        return to_wire(await self._mc.store.insert_contact(row))

    async def upsert(self, body: ContactCreate) -> ContactUpsertResult:
        """Create the contact, or update the one with this email (see :func:`_merge_upsert`)."""
        row = self._row(body, iso(self._mc.clock()))
        explicit = {row.email} if body.status is not None else set()
        outcome = await self._mc.store.upsert_contacts(
            self.account_id, [row], _merge_upsert(explicit)
        )
        if outcome.rejected:
            raise outcome.rejected[0][1]
        stored = await self._mc.store.list_contacts(
            self.account_id, ContactFilter(email=row.email), 0, 1
        )
        return ContactUpsertResult(created=outcome.created == 1, contact=to_wire(stored[0]))

    async def _get_row(self, contact_id: str) -> ContactRow:
        row = await self._mc.store.get_contact(self.account_id, contact_id)
        if row is None:
            raise NotFound(f"no contact {contact_id}", id=contact_id)
        return row

    async def get(self, contact_id: str) -> Contact:
        return to_wire(await self._get_row(contact_id))

    async def update(self, contact_id: str, body: ContactUpdate) -> Contact:
        row = await self._get_row(contact_id)
        if not isinstance(body.email, msgspec.UnsetType):
            row.email = normalize_email(body.email)
        if not isinstance(body.first_name, msgspec.UnsetType):
            row.first_name = clean_text(body.first_name, "firstName")
        if not isinstance(body.last_name, msgspec.UnsetType):
            row.last_name = clean_text(body.last_name, "lastName")
        if not isinstance(body.tags, msgspec.UnsetType):
            row.tags = clean_tags(body.tags)
        if not isinstance(body.custom_fields, msgspec.UnsetType):
            changes = clean_custom_fields(body.custom_fields, allow_null=True)
            fields = {**row.custom_fields, **changes}
            row.custom_fields = {k: v for k, v in fields.items() if v is not None}
            clean_custom_fields(row.custom_fields)  # the merged set within limits
        if not isinstance(body.status, msgspec.UnsetType):
            row.status = body.status
        row.updated_at = iso(self._mc.clock())
        return to_wire(await self._mc.store.update_contact(row))

    async def delete(self, contact_id: str) -> None:
        if not await self._mc.store.delete_contact(self.account_id, contact_id):
            raise NotFound(f"no contact {contact_id}", id=contact_id)

    async def list(
        self,
        *,
        limit: int = DEFAULT_PAGE,
        after: str | None = None,
        tag: str | None = None,
        status: str | None = None,
        email: str | None = None,
    ) -> ContactPage:
        """A page in creation order; pass ``nextCursor`` back as ``after`` for the next."""
        if not 1 <= limit <= MAX_PAGE:
            raise ValidationError(f"limit must be between 1 and {MAX_PAGE}", field="limit")
        if status is not None and status not in STATUSES:
            raise ValidationError(f"status must be one of {', '.join(STATUSES)}", field="status")
        flt = ContactFilter(
            tag=tag.strip() if tag is not None else None,
            status=status,
            email=normalize_email(email) if email is not None else None,
        )
        rows = await self._mc.store.list_contacts(
            self.account_id, flt, decode_cursor(after), limit + 1
        )
        has_more = len(rows) > limit
        rows = rows[:limit]
        return ContactPage(
            data=[to_wire(r) for r in rows],
            has_more=has_more,
            next_cursor=encode_cursor(rows[-1].seq) if has_more else None,
        )

    # -- bulk import ---------------------------------------------------------------

    async def import_json(
        self, body: bytes, progress: ProgressCallback | None = None
    ) -> ImportResult:
        """Import ``{"contacts": [...]}``: each element is validated on its own."""
        try:
            document = msgspec.json.decode(body, type=dict[str, list[msgspec.Raw]])
        except msgspec.DecodeError as exc:
            raise ValidationError(
                'the body must be {"contacts": [...]} in JSON: ' + str(exc), field="contacts"
            ) from exc
        if set(document) != {"contacts"}:
            raise ValidationError('the body must be {"contacts": [...]}', field="contacts")
        return await self._import(
            (_attempt(_decode_create, raw) for raw in document["contacts"]), progress
        )

    async def import_csv(
        self, body: bytes, progress: ProgressCallback | None = None
    ) -> ImportResult:
        """Import CSV with a header row; ``tags`` is ``;``-separated; unknown columns are
        custom fields (empty cells are skipped)."""
        try:
            text = body.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise ValidationError("the CSV must be UTF-8", field="body") from exc
        reader = csv.reader(io.StringIO(text, newline=""))
        header = next(reader, None)
        if header is None:
            raise ValidationError("the CSV is empty: a header row is required", field="body")
        columns: list[str] = []  # a contact field name, or "customFields.KEY"
        for name in header:
            squashed = name.strip().lower().replace("_", "").replace("-", "").replace(" ", "")
            known = _CSV_FIELDS.get(squashed)
            if known is None:
                try:
                    clean_custom_fields({name.strip(): ""})
                except ValidationError:
                    raise ValidationError(
                        f"the CSV column {name!r} is neither a contact field nor a valid custom "
                        "field key (a letter or '_' then letters, digits, '_' or '-')",
                        field="header",
                    ) from None
                known = "customFields." + name.strip()
            if known in columns:
                raise ValidationError(f"the CSV header repeats the column {name!r}", field="header")
            columns.append(known)
        if "email" not in columns:
            raise ValidationError("the CSV header has no email column", field="header")
        layout = _CsvLayout(columns)
        return await self._import((layout(cells) for cells in reader), progress)

    async def import_rows(
        self,
        rows: Iterable[ContactCreate | dict[str, Any]],
        progress: ProgressCallback | None = None,
    ) -> ImportResult:
        """Import contacts given as Structs or dicts (the embedding API's bulk path)."""

        def convert(item: ContactCreate | dict[str, Any]) -> ContactCreate:
            if isinstance(item, ContactCreate):
                return item
            return msgspec.convert(item, ContactCreate)

        return await self._import((_attempt(convert, r) for r in rows), progress)

    async def _import(
        self, items: Iterator[ContactCreate | Exception], progress: ProgressCallback | None
    ) -> ImportResult:
        """Upsert in batches of ``import_batch_size``, one transaction each; a row that
        fails validation is reported with its 1-based number and never stops the rest.
        The next batch is validated while the previous one is written (the writer runs in
        a worker thread, SQLite releases the GIL)."""
        batch_size = self._mc.settings.import_batch_size
        errors: list[ImportRowError] = []
        created = updated = total = 0
        send, receive = anyio.create_memory_object_stream[_ImportBatch](1)

        async def writer() -> None:
            nonlocal created, updated
            async with receive:
                async for b in receive:
                    outcome = await self._mc.store.upsert_contacts(
                        self.account_id, b.rows, _merge_upsert(b.explicit)
                    )
                    created += outcome.created
                    updated += outcome.updated
                    for index, exc in outcome.rejected:
                        errors.append(_row_error(b.numbers[index], exc, b.rows[index].email))
                    if progress is not None:
                        progress(b.numbers[-1])

        async with anyio.create_task_group() as tg:
            tg.start_soon(writer)
            async with send:
                batch = _ImportBatch()
                now = iso(self._mc.clock())
                for item in items:
                    total += 1
                    try:
                        if isinstance(item, Exception):
                            raise item
                        row = self._row(item, now)
                    except (ValidationError, msgspec.ValidationError) as exc:
                        email = item.email if isinstance(item, ContactCreate) else None
                        errors.append(_row_error(total, exc, email))
                        continue
                    batch.rows.append(row)
                    batch.numbers.append(total)
                    if item.status is not None:
                        batch.explicit.add(row.email)
                    if len(batch.rows) >= batch_size:
                        await send.send(batch)
                        batch = _ImportBatch()
                if batch.rows:
                    await send.send(batch)
        errors.sort(key=lambda e: e.row)
        return ImportResult(total=total, created=created, updated=updated, errors=errors)


@dataclass(slots=True)
class _ImportBatch:
    rows: list[ContactRow] = field(default_factory=list)
    numbers: list[int] = field(default_factory=list)  # 1-based row numbers in the input
    explicit: set[str] = field(default_factory=set)  # emails whose row gave a status


def _attempt(fn: Callable[[Any], ContactCreate], arg: Any) -> ContactCreate | Exception:
    try:
        return fn(arg)
    except (msgspec.ValidationError, msgspec.DecodeError, ValidationError) as exc:
        return exc


class _CsvLayout:
    """Where each field sits in a CSV row, worked out once from the header."""

    def __init__(self, columns: list[str]) -> None:
        self.width = len(columns)
        self.email = columns.index("email")
        self.first = columns.index("first_name") if "first_name" in columns else None
        self.last = columns.index("last_name") if "last_name" in columns else None
        self.tags = columns.index("tags") if "tags" in columns else None
        self.status = columns.index("status") if "status" in columns else None
        self.custom = [
            (i, c.removeprefix("customFields."))
            for i, c in enumerate(columns)
            if c.startswith("customFields.")
        ]

    def __call__(self, cells: list[str]) -> ContactCreate | Exception:
        if len(cells) != self.width:
            return ValidationError(
                f"the row has {len(cells)} cells, the header {self.width}", field="row"
            )
        tags = [] if self.tags is None else [t for t in cells[self.tags].split(";") if t.strip()]
        status = cells[self.status].strip() if self.status is not None else ""
        return ContactCreate(
            email=cells[self.email],
            first_name=cells[self.first] or None if self.first is not None else None,
            last_name=cells[self.last] or None if self.last is not None else None,
            tags=tags,
            custom_fields={key: cells[i] for i, key in self.custom if cells[i] != ""},
            status=status or None,  # type: ignore[arg-type]  # checked with the row
        )


def _row_error(row: int, exc: Exception, email: str | None) -> ImportRowError:
    if isinstance(exc, ValidationError):
        return ImportRowError(
            row=row, code=exc.code, message=exc.message, email=email, field=exc.field
        )
    message = str(exc)
    field = None
    if " - at `$." in message:
        message, _, path = message.partition(" - at `$.")
        field = path.rstrip("`")
    return ImportRowError(
        row=row, code="validation_error", message=message, email=email, field=field
    )
