"""Shared, defensive MIME helpers for the inbound parsers (no I/O).

Everything here takes untrusted bytes: the stdlib parser is used with the ``compat32``
policy (which records defects instead of raising), header values are read raw and decoded
here, and every string handed out is valid Unicode without control characters.
"""

from __future__ import annotations

import base64
import binascii
import quopri
import re
from collections.abc import Iterator, Mapping
from email.errors import HeaderParseError
from email.header import decode_header
from email.message import Message
from email.parser import BytesParser
from email.policy import compat32
from email.utils import collapse_rfc2231_value
from types import MappingProxyType

# Headers of the returned original message worth keeping (canonical spelling).
ORIGINAL_HEADER_NAMES = ("Message-ID", "X-Mailcore-Campaign", "To", "From", "Subject")
_ORIGINAL_LOOKUP = {name.lower(): name for name in ORIGINAL_HEADER_NAMES}

# Content types that carry the returned original message, or just its headers.
ORIGINAL_TYPES = frozenset(
    {"message/rfc822", "message/global", "text/rfc822-headers", "message/global-headers"}
)

_MAX_PARTS = 200
_MAX_DEPTH = 8
_MAX_VALUE = 998
_MAX_TEXT = 256 * 1024
_MAX_HEADER = 4096

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_FIELD_NAME = re.compile(r"[!-9;-~]+\Z")  # RFC 5322 ftext
_TYPED = re.compile(r"\s*[A-Za-z0-9][A-Za-z0-9.+_-]*\s*;")
_UNITEXT = re.compile(r"\\x\{([0-9A-Fa-f]{1,6})\}")
_ANGLE = re.compile(r"<([^<>\s]+)>")


def parse_message(raw: bytes) -> Message | None:
    """The parsed message, or None when the stdlib parser cannot cope (absurd nesting)."""
    try:
        return BytesParser(policy=compat32).parsebytes(raw)
    except RecursionError:
        return None


def unsurrogate(text: str) -> str:
    """Turn the parser's surrogate escapes back into bytes and decode them as UTF-8."""
    if text.isascii():
        return text
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:
        return "".join("\ufffd" if "\ud800" <= ch <= "\udfff" else ch for ch in text)


def clean(value: str | None) -> str | None:
    """Valid Unicode, control characters dropped, whitespace collapsed; None when empty."""
    if value is None:
        return None
    text = " ".join(_CONTROL.sub("", unsurrogate(value)).split())
    return text[:_MAX_VALUE] or None


def decode_words(value: str) -> str:
    """RFC 2047 encoded words decoded, best effort (unknown charsets decode as UTF-8)."""
    value = value[:_MAX_HEADER]
    try:
        chunks = decode_header(value)
    except (HeaderParseError, ValueError, LookupError):
        return value
    out: list[str] = []
    for chunk, charset in chunks:
        if isinstance(chunk, str):
            out.append(chunk)
        elif charset is None:
            out.append(chunk.decode("raw-unicode-escape", "replace"))
        else:
            out.append(decode_bytes(chunk, charset))
    return "".join(out)


def decode_bytes(data: bytes, charset: str | None) -> str:
    try:
        return data.decode(charset or "utf-8", "replace")
    except (LookupError, UnicodeError, ValueError, TypeError):
        return data.decode("utf-8", "replace")


def header(msg: Message, name: str) -> str | None:
    """The first ``name`` header, raw (undecoded) but valid Unicode."""
    wanted = name.lower()
    for key, value in msg.raw_items():
        if key.lower() == wanted:
            return unsurrogate(str(value))
    return None


def content_type(part: Message) -> str:
    return part.get_content_type()


def param(part: Message, name: str) -> str:
    value = part.get_param(name)
    if value is None:
        return ""
    try:
        text = collapse_rfc2231_value(value) if isinstance(value, tuple) else str(value)
    except (LookupError, UnicodeError, ValueError, TypeError):
        return ""
    return unsurrogate(text).strip().lower()


def children(part: Message) -> list[Message]:
    payload = part.get_payload()
    if isinstance(payload, list):
        return [child for child in payload if isinstance(child, Message)]
    return []


def containers(msg: Message) -> Iterator[Message]:
    """``msg`` and its MIME descendants, depth first, without entering ``message/*``
    parts (a forwarded or returned message is not part of this message's structure)."""
    stack = [(msg, 0)]
    seen = 0
    while stack and seen < _MAX_PARTS:
        part, depth = stack.pop()
        seen += 1
        yield part
        if depth < _MAX_DEPTH and part.get_content_maintype() == "multipart":
            stack.extend((child, depth + 1) for child in reversed(children(part)))


def find_report(
    msg: Message, report_types: frozenset[str], status_types: frozenset[str]
) -> tuple[Message, Message | None] | None:
    """The machine-readable part of the first ``multipart/report`` of an accepted
    report-type (a missing report-type is tolerated), with the returned-original part."""
    for part in containers(msg):
        if content_type(part) != "multipart/report":
            continue
        report_type = param(part, "report-type")
        if report_type and report_type not in report_types:
            continue
        parts = children(part)
        status = next((p for p in parts if content_type(p) in status_types), None)
        if status is None:
            continue
        original = next((p for p in parts if content_type(p) in ORIGINAL_TYPES), None)
        return status, original
    return None


def part_text(part: Message) -> str:
    """The body of a leaf or ``message/*`` part as text, transfer encoding undone.

    The stdlib splits ``message/*`` bodies into header blocks; they are flattened back
    into ``Name: value`` lines so every report body goes through :func:`field_blocks`.
    """
    payload = part.get_payload()
    if isinstance(payload, list):
        blocks: list[str] = []
        for sub in payload:
            if not isinstance(sub, Message):
                continue
            lines = [f"{key}: {value}" for key, value in sub.raw_items()]
            body = sub.get_payload()
            if isinstance(body, str) and body.strip():
                lines.extend(["", body])
            blocks.append("\n".join(lines))
        text = "\n\n".join(blocks)
    elif isinstance(payload, str):
        text = payload
    else:
        return ""
    text = text[:_MAX_TEXT]
    cte = (header(part, "content-transfer-encoding") or "").strip().lower()
    if cte not in ("base64", "quoted-printable"):
        return unsurrogate(text)
    data = text.encode("ascii", "ignore")
    if cte == "quoted-printable":
        decoded = quopri.decodestring(data)
    else:
        data = re.sub(rb"[^A-Za-z0-9+/]", b"", data)
        try:
            decoded = base64.b64decode(data + b"=" * (-len(data) % 4))
        except (binascii.Error, ValueError):
            return unsurrogate(text)
    return decode_bytes(decoded, part.get_content_charset() or "utf-8")


def leaf_text(part: Message) -> str:
    """A text leaf's body decoded with its declared charset (UTF-8 when unknown)."""
    data = part.get_payload(decode=True)
    if not isinstance(data, bytes):
        return ""
    try:
        charset = part.get_content_charset()
    except (LookupError, UnicodeError, ValueError):
        charset = None
    return decode_bytes(data[:_MAX_TEXT], charset)


def field_blocks(text: str) -> list[list[tuple[str, str]]]:
    """RFC 822-style field blocks (blank-line separated, folded lines joined) as
    (lower-cased name, raw value) pairs; lines that are not fields are skipped."""
    blocks: list[list[tuple[str, str]]] = []
    current: list[tuple[str, list[str]]] = []

    def close() -> None:
        if current:
            blocks.append([(name, " ".join(parts)) for name, parts in current])
            current.clear()

    for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        if not line.strip():
            close()
        elif line[0] in " \t":
            if current:
                current[-1][1].append(line.strip())
        else:
            name, colon, value = line.partition(":")
            name = name.strip()
            if colon and _FIELD_NAME.match(name):
                current.append((name.lower(), [value.strip()]))
    close()
    return blocks


def first_fields(block: list[tuple[str, str]]) -> dict[str, str]:
    """Field name → first value (later repeats are ignored)."""
    fields: dict[str, str] = {}
    for name, value in block:
        fields.setdefault(name, value)
    return fields


def untyped(value: str | None) -> str | None:
    """The value of a typed field (``rfc822; a@b``, ``dns; mx.example``, ``smtp; 550 …``)
    without its type, cleaned; unitext escapes (RFC 6533 ``\\x{HEX}``) decoded."""
    if value is None:
        return None
    match = _TYPED.match(value)
    if match:
        value = value[match.end() :]
    return clean(_UNITEXT.sub(_unitext_char, value))


def _unitext_char(match: re.Match[str]) -> str:
    code = int(match.group(1), 16)
    if code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
        return match.group(0)
    return chr(code)


def host(value: str | None) -> str | None:
    """A typed MTA name (``dns; mx.example.net. (comment)``) → ``mx.example.net``."""
    text = untyped(value)
    if text is None:
        return None
    return text.split("(")[0].strip().rstrip(".") or None


def address(value: str | None) -> str | None:
    text = untyped(value)
    if text is None:
        return None
    match = _ANGLE.search(text)
    text = match.group(1) if match else text.split()[0].strip("<>")
    return text or None


def message_id(value: str | None) -> str | None:
    text = clean(value)
    if text is None:
        return None
    match = _ANGLE.search(text)
    return match.group(1) if match else (text.split()[0].strip("<>") or None)


def original_fields(part: Message | None) -> dict[str, str]:
    """Header fields (lower-cased name → raw value) of a returned original message."""
    if part is None:
        return {}
    blocks = field_blocks(part_text(part))
    return first_fields(blocks[0]) if blocks else {}


def original_headers(fields: Mapping[str, str]) -> Mapping[str, str]:
    """The :data:`ORIGINAL_HEADER_NAMES` present in ``fields``, decoded and cleaned."""
    kept: dict[str, str] = {}
    for lower, canonical in _ORIGINAL_LOOKUP.items():
        value = clean(decode_words(fields[lower])) if lower in fields else None
        if value is not None:
            kept[canonical] = value
    return MappingProxyType(kept)
