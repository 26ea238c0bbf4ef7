"""Errors as JSON: ``{"error": {"code", "message", ...details}}`` with the error's status."""

from __future__ import annotations

import re
from typing import Any

import msgspec
from starlette.responses import Response

from ..errors import InvalidJSON, MailcoreError, ValidationError

_encode = msgspec.json.Encoder().encode
_MISSING = re.compile(r"missing required field `([^`]+)`")
_UNKNOWN = re.compile(r"unknown field `([^`]+)`")


def error_response(exc: MailcoreError, headers: dict[str, str] | None = None) -> Response:
    body: dict[str, Any] = {"code": exc.code, "message": exc.message}
    for key, value in exc.details.items():
        body[_camel(key)] = value
    return Response(
        _encode({"error": body}),
        status_code=exc.status,
        media_type="application/json",
        headers=headers,
    )


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def from_decode_error(exc: msgspec.DecodeError) -> MailcoreError:
    """Turn msgspec's message into an error that names the offending field."""
    if not isinstance(exc, msgspec.ValidationError):
        return InvalidJSON(f"the body is not valid JSON: {exc}")
    message = str(exc)
    field: str | None = None
    text, sep, path = message.partition(" - at `$")
    if sep:
        field = path.rstrip("`").lstrip(".")
    nested = _MISSING.search(text) or _UNKNOWN.search(text)
    if nested:
        field = f"{field}.{nested.group(1)}" if field else nested.group(1)
    return ValidationError(text if field is None else f"{field}: {text}", field=field)
