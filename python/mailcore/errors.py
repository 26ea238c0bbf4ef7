"""The exception hierarchy.

Every error a caller can see is a :class:`MailcoreError` with a stable ``code`` and the
HTTP ``status`` the REST layer answers with, so the library and the API report the same
failure the same way.
"""

from __future__ import annotations

from typing import Any, ClassVar


class MailcoreError(Exception):
    """Base of every mailcore error."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class InvalidJSON(MailcoreError):
    status = 400
    code = "invalid_json"


class ValidationError(MailcoreError):
    """A request value is missing, of the wrong type or out of range; ``field`` names it."""

    status = 400
    code = "validation_error"

    def __init__(self, message: str, *, field: str | None = None, **details: Any) -> None:
        if field is not None:
            details["field"] = field
        super().__init__(message, **details)
        self.field = field


class TemplateInvalid(ValidationError):
    code = "invalid_template"


class Unauthorized(MailcoreError):
    status = 401
    code = "unauthorized"


class InsufficientFunds(MailcoreError):
    status = 402
    code = "insufficient_funds"


class NotFound(MailcoreError):
    status = 404
    code = "not_found"


class MethodNotAllowed(MailcoreError):
    status = 405
    code = "method_not_allowed"


class Conflict(MailcoreError):
    status = 409
    code = "conflict"


class DuplicateContact(Conflict):
    code = "duplicate_contact"


class InvalidState(Conflict):
    """The object is not in a state that allows the operation (e.g. editing a sent campaign)."""

    code = "invalid_state"


class HoldAlreadyResolved(Conflict):
    code = "hold_already_resolved"


class PayloadTooLarge(MailcoreError):
    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(MailcoreError):
    status = 415
    code = "unsupported_media_type"


class IdempotencyKeyReused(MailcoreError):
    status = 422
    code = "idempotency_key_reused"


class StoreUnavailable(MailcoreError):
    """The database cannot be reached (PostgreSQL down, wrong address or credentials)."""

    status = 503
    code = "store_unavailable"


__all__ = [
    "Conflict",
    "DuplicateContact",
    "HoldAlreadyResolved",
    "IdempotencyKeyReused",
    "InsufficientFunds",
    "InvalidJSON",
    "InvalidState",
    "MailcoreError",
    "MethodNotAllowed",
    "NotFound",
    "PayloadTooLarge",
    "StoreUnavailable",
    "TemplateInvalid",
    "Unauthorized",
    "UnsupportedMediaType",
    "ValidationError",
]
