"""Delivery status notifications: RFC 3464 (and RFC 6533 ``global``) DSNs, plus a
conservative heuristic for the plain-text bounces some MTAs still send.

Both parsers are pure: bytes in, a frozen :class:`Dsn` (or None) out; they never raise
on malformed input.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import Message

from . import _mime

ACTIONS = frozenset({"failed", "delayed", "delivered", "relayed", "expanded"})

_REPORT_TYPES = frozenset({"delivery-status", "global-delivery-status"})
_STATUS_TYPES = frozenset({"message/delivery-status", "message/global-delivery-status"})
_STATUS = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.]*\d)")
_BASIC = re.compile(r"^\s*([245])\d\d(?![\d.])")
_ACTION_BY_CLASS = {"5": "failed", "4": "delayed", "2": "delivered"}


@dataclass(frozen=True, slots=True, kw_only=True)
class DsnRecipient:
    """One per-recipient block of a DSN."""

    final_recipient: str
    """The address (after ``rfc822;``) as the reporting MTA gave it."""
    original_recipient: str | None
    action: str
    """``failed``, ``delayed``, ``delivered``, ``relayed`` or ``expanded`` (lower-case);
    inferred from the status class when missing or unknown, ``""`` when impossible."""
    status: str
    """RFC 3463 code such as ``5.1.1``; taken from the Diagnostic-Code when the Status
    field is unusable; ``""`` when no code can be found."""
    diagnostic: str | None
    """Diagnostic-Code text after ``smtp;`` (e.g. ``550 5.1.1 … User unknown``)."""
    remote_mta: str | None

    @property
    def is_hard_bounce(self) -> bool:
        """Permanent failure: suppress the address."""
        return self.action == "failed" and self.status.startswith("5")

    @property
    def is_soft_bounce(self) -> bool:
        """Transient: a delay, or a give-up after persistent 4.x.x failures."""
        return self.action == "delayed" or (self.action == "failed" and self.status.startswith("4"))


@dataclass(frozen=True, slots=True, kw_only=True)
class Dsn:
    reporting_mta: str | None
    original_message_id: str | None
    """Message-ID of the returned original (angle brackets stripped)."""
    original_headers: Mapping[str, str]
    """Whichever of Message-ID, X-Mailcore-Campaign, To, From, Subject the returned
    original carries (read-only, RFC 2047 decoded)."""
    recipients: tuple[DsnRecipient, ...]


def parse_dsn(raw: bytes) -> Dsn | None:
    """The DSN in ``raw``: a ``multipart/report`` (report-type ``delivery-status``) with a
    ``message/delivery-status`` or ``message/global-delivery-status`` part.

    None when ``raw`` is not a DSN or no per-recipient block names a recipient.
    The report may be nested in other multiparts, never inside a ``message/*`` part.
    """
    msg = _mime.parse_message(raw)
    return None if msg is None else dsn_from_message(msg)


def parse_bounce_heuristic(raw: bytes) -> Dsn | None:
    """A hard bounce in a non-RFC 3464 notification (Exim, qmail, old Gmail, …), or None.

    Conservative: all of these must hold, otherwise None —

    * it comes from the mail system: a known bounce subject (``Mail delivery failed``,
      ``Undelivered Mail Returned to Sender``, ``Delivery Status Notification (Failure)``,
      ``failure notice``, ``Returned mail:``, ``Undeliverable:``, …) or a
      MAILER-DAEMON/postmaster sender; subjects about delays or warnings are rejected;
    * the explanatory text carries a 5xx SMTP reply and no sign of a temporary failure;
    * the failed recipient is known: the one address in ``X-Failed-Recipients`` (several
      there → None), else the returned original's To when the text names it, else the
      only address the text names (ignoring the bounce's own addresses, the original's
      sender and Message-ID, MAIL FROM in transcripts, and mailer-daemon/postmaster).

    The result has one recipient: action ``failed``, the enhanced status next to the
    reply (``5.0.0`` when absent), the reply line as diagnostic; no reporting MTA.
    """
    msg = _mime.parse_message(raw)
    return None if msg is None else heuristic_from_message(msg)


def dsn_from_message(msg: Message) -> Dsn | None:
    found = _mime.find_report(msg, _REPORT_TYPES, _STATUS_TYPES)
    if found is None:
        return None
    status_part, original = found
    reporting_mta: str | None = None
    recipients: list[DsnRecipient] = []
    for block in _mime.field_blocks(_mime.part_text(status_part)):
        fields = _mime.first_fields(block)
        if reporting_mta is None:
            reporting_mta = _mime.host(fields.get("reporting-mta"))
        recipient = _recipient(fields)
        if recipient is not None:
            recipients.append(recipient)
    if not recipients:
        return None
    headers = _mime.original_fields(original)
    return Dsn(
        reporting_mta=reporting_mta,
        original_message_id=_mime.message_id(headers.get("message-id")),
        original_headers=_mime.original_headers(headers),
        recipients=tuple(recipients),
    )


def _recipient(fields: Mapping[str, str]) -> DsnRecipient | None:
    original = _mime.address(fields.get("original-recipient"))
    final = _mime.address(fields.get("final-recipient")) or original
    if final is None:
        return None
    diagnostic = _mime.untyped(fields.get("diagnostic-code"))
    status = _status(_mime.clean(fields.get("status")), diagnostic)
    words = (_mime.clean(fields.get("action")) or "").lower().split()
    action = words[0] if words and words[0] in ACTIONS else _ACTION_BY_CLASS.get(status[:1], "")
    return DsnRecipient(
        final_recipient=final,
        original_recipient=original,
        action=action,
        status=status,
        diagnostic=diagnostic,
        remote_mta=_mime.host(fields.get("remote-mta")),
    )


def _status(field: str | None, diagnostic: str | None) -> str:
    for text in (field, diagnostic):
        match = _STATUS.search(text or "")
        if match:
            return ".".join(str(int(group)) for group in match.groups())
    basic = _BASIC.match(diagnostic or "")
    return f"{basic.group(1)}.0.0" if basic else ""


# --- heuristic -------------------------------------------------------------------------

_BOUNCE_SUBJECT = re.compile(
    r"""\s*(?:
        mail\ delivery\ failed
      | undelivered\ mail\ returned\ to\ sender
      | delivery\ status\ notification\ \(failure\)
      | failure\ notice
      | returned\ mail\b
      | undeliverable\b
      | undelivered\ mail\b
      | non-?deliverable\ mail
      | mail\ system\ error\ -\ returned\ mail
      | (?:message\ )?delivery\ failure\b
      | delivery\ has\ failed
      | permanent\ delivery\ failure
    )""",
    re.IGNORECASE | re.VERBOSE,
)
_NOT_FINAL_SUBJECT = re.compile(r"delay|warning|temporar|retry|\(relay\)|\(success\)", re.I)
_TEMPORARY = re.compile(
    r"temporar(?:y|ily)\s+(?:error|failure|problem|unavailable)"
    r"|will\s+(?:continue\s+to\s+)?(?:retry|try\s+again|be\s+retried)|still\s+trying",
    re.IGNORECASE,
)
_DAEMON_LOCALS = frozenset({"mailer-daemon", "mailerdaemon", "mail-daemon", "postmaster"})
_ADDRESS = re.compile(
    r"(?<![A-Za-z0-9._%+=-])([A-Za-z0-9._%+=-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63}){1,8})"
)
_REPLY = re.compile(r"(?<![\w.+-])(5[0-5]\d)(?:[ -](5\.\d{1,3}\.\d{1,3}))?(?![\w.])")
_ENHANCED = re.compile(r"(?<![\w.])5\.\d{1,3}\.\d{1,3}(?![\w.])")
# Envelope senders and message ids in transcripts are never the failed recipient.
_NOT_RECIPIENT = re.compile(r"(?:MAIL\s+FROM|Message-ID):\s*<[^<>\n]*>", re.IGNORECASE)
_REMOTE_HOST = re.compile(r"\bhost\s+([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+)\.?\s*\[")
# A dashed line announcing the inline copy of the returned message, e.g. Exim's
# "------ This is a copy of the message, including all the headers. ------" or qmail's
# "--- Below this line is a copy of the message.".
_COPY_WORDS = ("copy of", "original", "returned", "undelivered")


def heuristic_from_message(msg: Message) -> Dsn | None:
    subject = _mime.clean(_mime.decode_words(_mime.header(msg, "subject") or "")) or ""
    sender = _mime.header(msg, "from") or ""
    from_daemon = any(_is_daemon(a) for a in _addresses(sender))
    if _NOT_FINAL_SUBJECT.search(subject) or not (_BOUNCE_SUBJECT.match(subject) or from_daemon):
        return None

    explanation, original_fields = _explanation_and_original(msg)
    if _TEMPORARY.search(explanation):
        return None
    reply = _REPLY.search(explanation)
    if reply is None:
        return None

    ignored = {a.lower() for a in _addresses(sender)}
    for name in ("to", "cc", "return-path", "delivered-to", "sender", "reply-to", "x-original-to"):
        ignored.update(a.lower() for a in _addresses(_mime.header(msg, name) or ""))
    for name in ("from", "sender", "return-path", "reply-to"):
        ignored.update(a.lower() for a in _addresses(original_fields.get(name, "")))
    original_id = _mime.message_id(original_fields.get("message-id"))
    if original_id:
        ignored.add(original_id.lower())

    named: dict[str, str] = {}
    for candidate in _addresses(_NOT_RECIPIENT.sub(" ", explanation)):
        key = candidate.lower()
        if key not in ignored and not _is_daemon(candidate):
            named.setdefault(key, candidate)
    failed = _addresses(_mime.header(msg, "x-failed-recipients") or "")
    original_to = [a.lower() for a in _addresses(original_fields.get("to", ""))]
    if failed:  # set by the bouncing MTA itself (Exim, Gmail)
        if len(failed) != 1:
            return None
        recipient = failed[0]
    elif len(original_to) == 1 and original_to[0] in named:
        recipient = named[original_to[0]]
    elif len(named) == 1:
        (recipient,) = named.values()
    else:
        return None

    line_start = explanation.rfind("\n", 0, reply.start()) + 1
    line_end = explanation.find("\n", reply.end())
    line = explanation[line_start : line_end if line_end >= 0 else len(explanation)]
    enhanced = reply.group(2) or _first(_ENHANCED.findall(line)) or "5.0.0"
    remote = _REMOTE_HOST.search(explanation)
    return Dsn(
        reporting_mta=None,
        original_message_id=original_id,
        original_headers=_mime.original_headers(original_fields),
        recipients=(
            DsnRecipient(
                final_recipient=recipient,
                original_recipient=None,
                action="failed",
                status=_status(enhanced, None),
                diagnostic=_mime.clean(explanation[reply.start() : line_start + len(line)]),
                remote_mta=remote.group(1).lower() if remote else None,
            ),
        ),
    )


def _explanation_and_original(msg: Message) -> tuple[str, dict[str, str]]:
    """The human-readable text of the notification (up to any inline copy of the
    returned message) and the returned message's header fields."""
    texts: list[str] = []
    original: dict[str, str] = {}
    for part in _mime.containers(msg):
        ctype = _mime.content_type(part)
        if ctype in _mime.ORIGINAL_TYPES:
            original = original or _mime.original_fields(part)
        elif (
            ctype == "text/plain"
            and "attachment" not in (_mime.header(part, "content-disposition") or "").lower()
        ):
            texts.append(_mime.leaf_text(part))
    text = _mime.unsurrogate("\n".join(texts))
    marker = _copy_marker(text)
    if marker is not None:
        start, end = marker
        if not original:
            blocks = _mime.field_blocks(text[end:])
            original = _mime.first_fields(blocks[0]) if blocks else {}
        text = text[:start]
    return text, original


def _copy_marker(text: str) -> tuple[int, int] | None:
    """Start and end offsets of the line introducing an inline copy of the message."""
    start = 0
    while start < len(text):
        end = text.find("\n", start)
        end = len(text) if end < 0 else end + 1
        line = text[start:end].strip().lower()
        if (
            line.startswith("--")
            and len(line) <= 200
            and ("message" in line or "headers" in line)
            and any(word in line for word in _COPY_WORDS)
        ):
            return start, end
        start = end
    return None


def _addresses(text: str) -> list[str]:
    return [a.rstrip(".") for a in _ADDRESS.findall(text)]


def _is_daemon(addr: str) -> bool:
    return addr.partition("@")[0].lower() in _DAEMON_LOCALS


def _first(items: list[str]) -> str | None:
    return items[0] if items else None
