"""Type stubs for the Rust extension module ``mailcore._engine`` (engine/py)."""

from collections.abc import Sequence
from typing import final

__all__ = [
    "MICROS_PER_USD",
    "PRICE_PER_EMAIL_MICROS",
    "AudienceIndex",
    "EngineError",
    "MoneyError",
    "Template",
    "TemplateError",
    "cost_micros",
    "format_micros",
    "parse_usd",
]

class EngineError(Exception):
    """Base of all engine errors."""

class TemplateError(EngineError):
    """Template compile error; ``str(e)`` is e.g. ``"unknown field 'foo' at offset 12"``."""

    field: str | None
    """The offending field path when the error is about a field, else ``None``."""
    offset: int
    """Character offset (in chars, not bytes) of the ``{{`` of the offending tag."""

class MoneyError(EngineError):
    """Money overflow, negative amount/count, or malformed decimal text."""

PRICE_PER_EMAIL_MICROS: int
MICROS_PER_USD: int

def cost_micros(count: int, unit_micros: int) -> int:
    """``count * unit_micros`` with checked i64 arithmetic; negative or overflow -> MoneyError."""

def format_micros(micros: int, decimals: int = 2) -> str:
    """Decimal USD string rounded half-up (ties away from zero) to ``decimals`` (0..=6)."""

def parse_usd(text: str) -> int:
    """Parse ``-?digits(.d{1,6})?`` into micros; anything else or overflow -> MoneyError."""

@final
class Template:
    """A compiled merge-tag template (``{{ path }}`` / ``{{ path | default: "x" }}``)."""

    def __init__(self, source: str) -> None: ...
    @property
    def fields(self) -> list[str]:
        """Distinct field paths referenced, in order of first appearance."""
    @property
    def source(self) -> str: ...
    def render(self, values: dict[str, str], *, html: bool) -> str:
        """Substitute ``values`` (field path -> value); ``html=True`` HTML-escapes substitutions."""

@final
class AudienceIndex:
    """Roaring-bitmap index of contacts (u32 ids) by tag and status (0..=255)."""

    def __init__(self) -> None: ...
    def upsert(self, contact: int, status: int, tags: Sequence[str]) -> None: ...
    def upsert_many(
        self,
        contacts: Sequence[int],
        statuses: Sequence[int],
        tags: Sequence[Sequence[str]],
    ) -> None: ...
    def remove(self, contact: int) -> bool: ...
    def count(
        self,
        *,
        any_tags: Sequence[str] = ...,
        all_tags: Sequence[str] = ...,
        none_tags: Sequence[str] = ...,
        statuses: Sequence[int] | None = None,
    ) -> int: ...
    def members(
        self,
        *,
        any_tags: Sequence[str] = ...,
        all_tags: Sequence[str] = ...,
        none_tags: Sequence[str] = ...,
        statuses: Sequence[int] | None = None,
    ) -> bytes:
        """Matching contact ids as little-endian u32, ascending (``array('I', b)``)."""
    def tags(self) -> list[str]: ...
    def __len__(self) -> int: ...
    def __contains__(self, contact: int, /) -> bool: ...
