"""Bounces and complaints that arrive after delivery: DSNs (RFC 3464) and feedback-loop
reports (ARF, RFC 5965), by the API or by inbound SMTP to the VERP return path.

A report is matched to the email it is about by the signed VERP address it was sent to,
else by the returned original's Message-ID (``{campaign}.{contact}@…``, which mailcore
sets); through the API only within the caller's account.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import anyio
import msgspec
from anyio.abc import TaskStatus

from .ids import iso
from .inbound import Complaint, Dsn, classify
from .sending.render import verp_codec
from .smtp import MessageReceived, RcptTo, Reply, ServerEvent, ServerProtocol, Sink

if TYPE_CHECKING:
    from .facade import Mailcore

log = logging.getLogger("mailcore.feedback")
_MESSAGE_ID = re.compile(r"^(cmp_[0-9a-f]{30})\.(\d{1,12})@")


class FeedbackResult(msgspec.Struct, rename="camel", kw_only=True, frozen=True):
    kind: Literal["bounce", "complaint", "ignored"]
    applied: int
    reports: int


class FeedbackProcessor:
    def __init__(self, mc: Mailcore) -> None:
        self.mc = mc
        self.verp = verp_codec(mc.secret_key)

    async def _target(
        self, envelope: Sequence[str], message_id: str | None
    ) -> tuple[str, int] | None:
        for address in envelope:
            decoded = self.verp.decode(address)
            if decoded is not None:
                campaign_id = await self.mc.store.campaign_seq_to_id(decoded[0])
                if campaign_id is not None:
                    return campaign_id, decoded[1]
        m = _MESSAGE_ID.match(message_id or "")
        if m is not None:
            return m.group(1), int(m.group(2))
        return None

    async def process(
        self, raw: bytes, *, envelope: Sequence[str] = (), account_id: str | None = None
    ) -> FeedbackResult:
        report = classify(raw)
        now = iso(self.mc.clock())
        if isinstance(report, Complaint):
            target = await self._target(envelope, report.original_message_id)
            done = target is not None and await self.mc.store.apply_feedback(
                target[0], target[1], "complaint", report.feedback_type, now, account_id
            )
            return FeedbackResult(kind="complaint", applied=int(done), reports=1)
        if isinstance(report, Dsn):
            target = await self._target(envelope, report.original_message_id)
            applied = 0
            for rcpt in report.recipients:
                if target is None or not (rcpt.is_hard_bounce or rcpt.is_soft_bounce):
                    continue
                kind = "hard_bounce" if rcpt.is_hard_bounce else "soft_bounce"
                detail = f"{rcpt.status} {rcpt.diagnostic or ''}".strip()
                if await self.mc.store.apply_feedback(
                    target[0], target[1], kind, detail, now, account_id
                ):
                    applied += 1
            return FeedbackResult(kind="bounce", applied=applied, reports=len(report.recipients))
        return FeedbackResult(kind="ignored", applied=0, reports=0)


class InboundSmtp(Sink):
    """``mailcore serve``'s inbound SMTP listener: accepts the signed VERP return paths of
    ours (bounces) and ``fbl@BOUNCE_DOMAIN`` (feedback-loop reports, matched by the
    original's Message-ID), refuses everything else, parses what arrives."""

    def __init__(self, mc: Mailcore, *, host: str, port: int) -> None:
        super().__init__(host=host, port=port, hostname="mailcore.inbound")
        self.processor = FeedbackProcessor(mc)
        domain = mc.settings.bounce_domain.lower()
        self.feedback_address = f"fbl@{domain}" if domain else None

    def _accepts(self, address: str) -> bool:
        plain = address.strip("<>").lower()
        return self.processor.verp.decode(plain) is not None or plain == self.feedback_address

    async def _reply(self, proto: ServerProtocol, event: ServerEvent) -> Reply:
        if isinstance(event, RcptTo) and not self._accepts(event.address):
            self.rejected += 1
            return Reply.of(550, "5.1.1 no such mailbox")
        if isinstance(event, MessageReceived):
            self.messages += 1
            try:
                result = await self.processor.process(
                    event.content, envelope=list(event.recipients)
                )
            except Exception:  # a report we cannot apply must not make the sender retry
                log.exception("inbound report could not be applied")
            else:
                log.info("inbound %s: %d applied", result.kind, result.applied)
        return proto.default_reply(event)


async def run_inbound(
    mc: Mailcore, *, task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED
) -> None:
    server = InboundSmtp(mc, host=mc.settings.host, port=mc.settings.inbound_smtp_port)
    await server.serve(task_status=task_status)
