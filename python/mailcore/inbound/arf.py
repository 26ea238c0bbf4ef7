"""Abuse feedback reports (complaints): RFC 5965 ARF, as sent by mailbox providers'
feedback loops (Yahoo/AOL CFL, Microsoft JMRP, …). Pure and total: bytes in, a frozen
:class:`Complaint` (or None) out, never an exception."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from email.message import Message

from . import _mime

_REPORT_TYPES = frozenset({"feedback-report"})
_STATUS_TYPES = frozenset({"message/feedback-report"})


@dataclass(frozen=True, slots=True, kw_only=True)
class Complaint:
    feedback_type: str
    """``abuse``, ``fraud``, ``virus``, ``not-spam``, ``auth-failure``, ``other``, …
    (lower-case); ``abuse`` when the report omits the field."""
    user_agent: str | None
    version: str | None
    original_mail_from: str | None
    """Envelope sender of the reported message, angle brackets stripped."""
    original_rcpt_to: str | None
    """The complaining recipient: Original-Rcpt-To, else the
    ``X-HmXmrOriginalRecipient`` header Microsoft adds to the returned original.
    Providers often redact it; identify the contact by the VERP return path or the
    original headers instead."""
    arrival_date: str | None
    """Arrival-Date (or the older Received-Date) as written."""
    source_ip: str | None
    reported_domain: str | None
    """The first Reported-Domain."""
    original_message_id: str | None
    """Message-ID of the returned original (angle brackets stripped)."""
    original_headers: Mapping[str, str]
    """Whichever of Message-ID, X-Mailcore-Campaign, To, From, Subject the returned
    original carries (read-only, RFC 2047 decoded)."""


def parse_arf(raw: bytes) -> Complaint | None:
    """The complaint in ``raw``: a ``multipart/report`` (report-type ``feedback-report``)
    with a ``message/feedback-report`` part; None for anything else. The report may be
    nested in other multiparts, never inside a ``message/*`` part."""
    msg = _mime.parse_message(raw)
    return None if msg is None else complaint_from_message(msg)


def complaint_from_message(msg: Message) -> Complaint | None:
    found = _mime.find_report(msg, _REPORT_TYPES, _STATUS_TYPES)
    if found is None:
        return None
    report, original = found
    blocks = _mime.field_blocks(_mime.part_text(report))
    fields = _mime.first_fields([field for block in blocks for field in block])
    headers = _mime.original_fields(original)
    feedback_type = (_mime.clean(fields.get("feedback-type")) or "abuse").lower()
    source_ip = _mime.clean(fields.get("source-ip"))
    return Complaint(
        feedback_type=feedback_type.split()[0],
        user_agent=_mime.clean(fields.get("user-agent")),
        version=_mime.clean(fields.get("version")),
        original_mail_from=_mime.address(fields.get("original-mail-from")),
        original_rcpt_to=_mime.address(
            fields.get("original-rcpt-to") or headers.get("x-hmxmroriginalrecipient")
        ),
        arrival_date=_mime.clean(fields.get("arrival-date") or fields.get("received-date")),
        source_ip=(source_ip.split()[0].strip("[]") or None) if source_ip else None,
        reported_domain=_mime.clean(fields.get("reported-domain")),
        original_message_id=_mime.message_id(headers.get("message-id")),
        original_headers=_mime.original_headers(headers),
    )
