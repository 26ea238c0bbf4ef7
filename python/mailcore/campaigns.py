"""Campaigns: drafts with validated templates, an audience and a cost estimate."""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from . import _engine
from .errors import InvalidState, NotFound, TemplateInvalid, ValidationError
from .ids import decode_cursor, encode_cursor, iso, new_id
from .models import (
    Audience,
    Campaign,
    CampaignCreate,
    CampaignPage,
    CampaignStats,
    CampaignUpdate,
    SendCost,
    Sender,
    SendResult,
    StatsCost,
)
from .pricing import CURRENCY, PRICE_PER_EMAIL_MICROS, estimate_micros, estimated_cost, usd
from .sending.render import renderer_for
from .store import CampaignRow
from .validation import clean_tags, clean_text, normalize_email

if TYPE_CHECKING:
    from .facade import Mailcore

MAX_PAGE = 100
DEFAULT_PAGE = 20

_encode = msgspec.json.Encoder().encode
_decode_definition = msgspec.json.Decoder(CampaignCreate).decode


def compile_template(source: str, field: str, *, html: bool = False) -> _engine.Template:
    """Compile a merge-tag template (``html``: as HTML, as the renderer will); a
    TemplateInvalid (400) names the field and the tag."""
    try:
        return _engine.Template(source, html=html)
    except _engine.TemplateError as exc:
        raise TemplateInvalid(
            f"{field}: {exc}", field=field, tag=exc.field, offset=exc.offset
        ) from exc


def clean_definition(body: CampaignCreate) -> CampaignCreate:
    """Validate and normalise a campaign definition: templates compile, addresses are
    valid, the one-line fields carry no CR/LF."""
    name = clean_text(body.name, "name")
    if name is None:
        raise ValidationError("a campaign needs a name", field="name")
    subject = clean_text(body.subject, "subject", max_length=998)
    if subject is None:
        raise ValidationError("a campaign needs a subject", field="subject")
    preheader = clean_text(body.preheader, "preheader", max_length=500) or ""
    compile_template(subject, "subject")
    compile_template(preheader, "preheader", html=True)
    compile_template(body.content.html, "content.html", html=True)
    if body.content.text is not None:
        compile_template(body.content.text, "content.text")
    tags = clean_tags(body.audience.tags, "audience.tags")
    if not tags:
        raise ValidationError("the audience needs at least one tag", field="audience.tags")
    return CampaignCreate(
        name=name,
        subject=subject,
        preheader=preheader,
        from_=Sender(
            email=normalize_email(body.from_.email, "from.email"),
            name=clean_text(body.from_.name, "from.name"),
        ),
        reply_to=normalize_email(body.reply_to, "replyTo") if body.reply_to is not None else None,
        audience=Audience(
            tags=tags, exclude_tags=clean_tags(body.audience.exclude_tags, "audience.excludeTags")
        ),
        content=body.content,
        tracking=body.tracking,
    )


class Campaigns:
    def __init__(self, mc: Mailcore, account_id: str) -> None:
        self._mc = mc
        self.account_id = account_id

    async def _count(self, definition: CampaignCreate) -> int:
        return await self._mc.audiences.count(
            self.account_id, definition.audience.tags, definition.audience.exclude_tags
        )

    async def _to_wire(self, row: CampaignRow) -> Campaign:
        definition = _decode_definition(row.definition)
        # A draft's audience is live; once sent, the count frozen in the plan.
        count = await self._count(definition) if row.status == "draft" else row.audience_count
        return Campaign(
            id=row.id,
            name=definition.name,
            status=row.status,  # type: ignore[arg-type]  # the store only holds valid statuses
            subject=definition.subject,
            preheader=definition.preheader,
            from_=definition.from_,
            reply_to=definition.reply_to,
            audience=definition.audience,
            content=definition.content,
            tracking=definition.tracking,
            audience_count=count,
            estimated_cost=estimated_cost(count),
            currency=CURRENCY,
            created_at=row.created_at,
            updated_at=row.updated_at,
            sent_at=row.sent_at,
        )

    async def create(self, body: CampaignCreate) -> Campaign:
        definition = clean_definition(body)
        now = iso(self._mc.clock())
        row = CampaignRow(
            seq=0,
            id=new_id("cmp"),
            account_id=self.account_id,
            status="draft",
            definition=_encode(definition),
            audience_count=await self._count(definition),
            created_at=now,
            updated_at=now,
            sent_at=None,
        )
        return await self._to_wire(await self._mc.store.insert_campaign(row))

    async def _get_row(self, campaign_id: str) -> CampaignRow:
        row = await self._mc.store.get_campaign(self.account_id, campaign_id)
        if row is None:
            raise NotFound(f"no campaign {campaign_id}", id=campaign_id)
        return row

    async def get(self, campaign_id: str) -> Campaign:
        return await self._to_wire(await self._get_row(campaign_id))

    async def list(self, *, limit: int = DEFAULT_PAGE, after: str | None = None) -> CampaignPage:
        if not 1 <= limit <= MAX_PAGE:
            raise ValidationError(f"limit must be between 1 and {MAX_PAGE}", field="limit")
        rows = await self._mc.store.list_campaigns(self.account_id, decode_cursor(after), limit + 1)
        has_more = len(rows) > limit
        rows = rows[:limit]
        return CampaignPage(
            data=[await self._to_wire(r) for r in rows],
            has_more=has_more,
            next_cursor=encode_cursor(rows[-1].seq) if has_more else None,
        )

    async def update(self, campaign_id: str, body: CampaignUpdate) -> Campaign:
        """Change a draft; a campaign that is sending or sent cannot change (409)."""
        row = await self._get_row(campaign_id)
        if row.status != "draft":
            raise InvalidState(f"campaign {campaign_id} is {row.status}; only drafts can change")
        current = _decode_definition(row.definition)
        changes = {
            name: value
            for name in CampaignUpdate.__struct_fields__
            if not isinstance(value := getattr(body, name), msgspec.UnsetType)
        }
        definition = clean_definition(msgspec.structs.replace(current, **changes))
        row.definition = _encode(definition)
        row.audience_count = await self._count(definition)
        row.updated_at = iso(self._mc.clock())
        return await self._to_wire(await self._mc.store.update_campaign(row, "draft"))

    async def delete(self, campaign_id: str) -> None:
        """Delete a draft (409 for a campaign that was sent)."""
        await self._mc.store.delete_campaign(self.account_id, campaign_id, "draft")

    # -- sending -------------------------------------------------------------------

    async def send(self, campaign_id: str) -> SendResult:
        """Freeze the audience as the plan, hold audience × price on the wallet (402 if it
        does not cover it) and start sending. 409 unless the campaign is a draft."""
        row = await self._get_row(campaign_id)
        if row.status != "draft":
            raise InvalidState(f"campaign {campaign_id} is {row.status}; only a draft can be sent")
        definition = _decode_definition(row.definition)
        members = await self._mc.audiences.members(
            self.account_id, definition.audience.tags, definition.audience.exclude_tags
        )
        if not members:
            raise ValidationError("the campaign's audience is empty", field="audience")
        now = iso(self._mc.clock())
        links = renderer_for(definition, campaign_id, self._mc.settings.public_url).links
        send = await self._mc.store.start_send(
            self.account_id,
            campaign_id,
            new_id("hold"),
            PRICE_PER_EMAIL_MICROS,
            members,
            now,
            links,
        )
        self._mc.notify_send()
        return SendResult(
            id=campaign_id,
            status="sending",
            audience_count=send.audience_count,
            cost=SendCost(
                estimated=estimated_cost(send.audience_count),
                currency=CURRENCY,
                hold_id=send.hold_id,
            ),
            sent_at=now,
        )

    async def cancel(self, campaign_id: str) -> CampaignStats:
        """Stop a sending campaign: nothing more is sent; what was delivered is charged and
        the rest of the hold released once the messages in flight are recorded."""
        await self._get_row(campaign_id)
        await self._mc.store.cancel_send(self.account_id, campaign_id, iso(self._mc.clock()))
        self._mc.notify_send()
        return await self.stats(campaign_id)

    async def pause(self, campaign_id: str) -> CampaignStats:
        """Stop claiming recipients of a sending campaign. Messages already handed to an
        SMTP connection finish and are recorded; the rest stay queued, so a resume sends
        each recipient once. 409 unless it is sending."""
        await self._get_row(campaign_id)
        await self._mc.store.pause_send(self.account_id, campaign_id, iso(self._mc.clock()))
        self._mc.notify_send()
        return await self.stats(campaign_id)

    async def resume(self, campaign_id: str) -> CampaignStats:
        """Carry on sending a paused campaign. 409 unless it is paused."""
        await self._get_row(campaign_id)
        await self._mc.store.resume_send(self.account_id, campaign_id, iso(self._mc.clock()))
        self._mc.notify_send()
        return await self.stats(campaign_id)

    async def stats(self, campaign_id: str) -> CampaignStats:
        row = await self._get_row(campaign_id)
        send = await self._mc.store.get_send(self.account_id, campaign_id)
        if send is None:
            audience = await self._count(_decode_definition(row.definition))
            counts: dict[str, int] = {"queued": audience}
            last_error = None
        else:
            audience = send.audience_count
            counts = await self._mc.store.recipient_counts(campaign_id)
            last_error = send.last_error
        delivered = counts.get("delivered", 0)
        engagement = await self._mc.store.engagement_counts(campaign_id)
        feedback = await self._mc.store.feedback_counts(campaign_id)
        estimated = estimate_micros(audience)
        actual = (
            send.charged_micros
            if send is not None and send.charged_micros is not None
            else (delivered * PRICE_PER_EMAIL_MICROS)
        )
        return CampaignStats(
            id=campaign_id,
            status=row.status,  # type: ignore[arg-type]  # the store only holds valid statuses
            audience_count=audience,
            delivered=delivered,
            bounced=counts.get("bounced", 0),
            deferred=counts.get("deferred", 0),
            failed=counts.get("failed", 0),
            suppressed=counts.get("suppressed", 0),
            cancelled=counts.get("cancelled", 0),
            pending=counts.get("queued", 0) + counts.get("sending", 0),
            opened=engagement.get("open", (0, 0))[0],
            clicked=engagement.get("click", (0, 0))[0],
            total_opens=engagement.get("open", (0, 0))[1],
            total_clicks=engagement.get("click", (0, 0))[1],
            hard_bounces=counts.get("bounced", 0) + feedback.get("hard_bounce", 0),
            soft_bounces=counts.get("failed", 0) + feedback.get("soft_bounce", 0),
            complained=feedback.get("complaint", 0),
            unsubscribed=feedback.get("unsubscribe", 0),
            cost=StatsCost(
                estimated=usd(estimated, 2),
                actual=usd(actual, 2),
                currency=CURRENCY,
                estimated_micros=estimated,
                actual_micros=actual,
            ),
            last_error=last_error,
        )
