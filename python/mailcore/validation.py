"""Validation and normalisation of contact data shared by every write path."""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Iterable, Mapping
from typing import Any

from .errors import ValidationError

MAX_TAGS = 100
MAX_TAG_LENGTH = 64
MAX_CUSTOM_FIELDS = 50
MAX_CUSTOM_VALUE_LENGTH = 2_000
MAX_NAME_LENGTH = 200

# Keys are usable in templates as {{customFields.KEY}}: the engine's key syntax.
_FIELD_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,63}")
_LOCAL_ATOM = re.compile(r"[\w!#$%&'*+/=?^`{|}~-]+")
_DOMAIN_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]")
# The common case, all ASCII and already lower-cased: one match instead of the general path.
_ATOM = r"[a-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_ASCII_EMAIL = re.compile(
    rf"(?=.{{1,64}}@){_ATOM}(?:\.{_ATOM})*@(?:{_LABEL}\.)+(?![0-9]+$){_LABEL}"
)


def normalize_email(value: str, field: str = "email") -> str:
    """Trim, NFC-normalise and lower-case an address; raise ValidationError if it is not a
    plausible mailbox (dot-atom local part, a dotted domain, IDN domains allowed)."""
    if value.isascii():
        email = value.strip().lower()
        if len(email) <= 254 and _ASCII_EMAIL.fullmatch(email):
            return email
    return _normalize_any_email(value, field)


def _normalize_any_email(value: str, field: str) -> str:
    """The general rules: any Unicode, IDN domains through IDNA."""
    email = unicodedata.normalize("NFC", value.strip()).lower()
    if len(email) > 254 or _CONTROL.search(email):
        raise ValidationError(f"{value!r} is not a valid email address", field=field)
    local, sep, domain = email.rpartition("@")
    if not sep or not local or not domain or len(local) > 64:
        raise ValidationError(f"{value!r} is not a valid email address", field=field)
    if not all(_LOCAL_ATOM.fullmatch(atom) for atom in local.split(".")):
        raise ValidationError(f"{value!r} is not a valid email address", field=field)
    try:
        ascii_domain = domain.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise ValidationError(f"{value!r} has an invalid domain", field=field) from exc
    labels = ascii_domain.split(".")
    if len(labels) < 2 or not all(_DOMAIN_LABEL.fullmatch(label) for label in labels):
        raise ValidationError(f"{value!r} has an invalid domain", field=field)
    if labels[-1].isdigit():
        raise ValidationError(f"{value!r} has an invalid domain", field=field)
    return email


def clean_text(value: str | None, field: str, max_length: int = MAX_NAME_LENGTH) -> str | None:
    """Names and similar one-line values: trimmed, no control characters (a CR or LF here
    could otherwise reach a message header)."""
    if value is None:
        return None
    text = value.strip()
    if _CONTROL.search(text):
        raise ValidationError(f"{field} must not contain control characters", field=field)
    if len(text) > max_length:
        raise ValidationError(f"{field} is longer than {max_length} characters", field=field)
    return text or None


def clean_tags(tags: Iterable[str], field: str = "tags") -> list[str]:
    """Trimmed, de-duplicated (first occurrence wins), each 1–64 characters with no control
    characters, commas or semicolons (the CSV import's separators)."""
    seen: dict[str, None] = {}
    for i, raw in enumerate(tags):
        if not isinstance(raw, str):
            raise ValidationError("a tag must be a string", field=f"{field}[{i}]")
        tag = raw.strip()
        if not tag or len(tag) > MAX_TAG_LENGTH:
            raise ValidationError(
                f"a tag must be 1 to {MAX_TAG_LENGTH} characters", field=f"{field}[{i}]"
            )
        if _CONTROL.search(tag) or "," in tag or ";" in tag:
            raise ValidationError(
                "a tag must not contain control characters, ',' or ';'", field=f"{field}[{i}]"
            )
        seen.setdefault(tag, None)
    if len(seen) > MAX_TAGS:
        raise ValidationError(f"a contact has at most {MAX_TAGS} tags", field=field)
    return list(seen)


def clean_custom_fields(
    fields: Mapping[str, Any], field: str = "customFields", allow_null: bool = False
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in fields.items():
        where = f"{field}.{key}"
        if not isinstance(key, str) or not _FIELD_KEY.fullmatch(key):
            raise ValidationError(
                "a custom field key is a letter or '_' followed by up to 63 letters, digits, "
                "'_' or '-'",
                field=where,
            )
        if value is None and allow_null:
            out[key] = None
        elif isinstance(value, bool | int):
            if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 2**53:
                raise ValidationError("a custom field number is too large", field=where)
            out[key] = value
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise ValidationError("a custom field number must be finite", field=where)
            out[key] = value
        elif isinstance(value, str):
            if "\x00" in value or len(value) > MAX_CUSTOM_VALUE_LENGTH:
                raise ValidationError(
                    f"a custom field value has at most {MAX_CUSTOM_VALUE_LENGTH} characters "
                    "and no NUL",
                    field=where,
                )
            out[key] = value
        else:
            raise ValidationError(
                "a custom field value is a string, number or boolean", field=where
            )
    if len(out) > MAX_CUSTOM_FIELDS:
        raise ValidationError(
            f"a contact has at most {MAX_CUSTOM_FIELDS} custom fields", field=field
        )
    return out
