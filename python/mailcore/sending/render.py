"""From a campaign and its claimed recipients to the engine's batch render."""

from __future__ import annotations

from collections.abc import Mapping
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import msgspec

from .. import _engine
from ..config import DkimKey
from ..ids import Clock
from ..inbound.verp import VerpCodec
from ..models import CampaignCreate
from ..store import RecipientWork
from ..tokens import TRACKING, UNSUBSCRIBE, TokenSigner
from ..varint import encode as varint

_json = msgspec.json.Encoder()


def verp_codec(secret_key: str) -> VerpCodec:
    """The VERP codec of this installation (it derives its own key from the secret)."""
    return VerpCodec(secret_key.encode())


def renderer_for(
    definition: CampaignCreate,
    campaign_id: str,
    public_url: str,
    dkim: Mapping[str, DkimKey] | None = None,
) -> _engine.MessageRenderer:
    """The campaign's compiled renderer; DKIM-signing when its from-domain has a key."""
    key = (dkim or {}).get(definition.from_.email.rpartition("@")[2])
    signing: dict[str, Any] = {}
    if key is not None:
        signing = {
            "dkim_domain": definition.from_.email.rpartition("@")[2],
            "dkim_selector": key.selector,
            "dkim_private_key": Path(key.private_key_file).read_text(),
            "dkim_algorithm": key.algorithm,
        }
    return _engine.MessageRenderer(
        subject=definition.subject,
        preheader=definition.preheader,
        html=definition.content.html,
        text=definition.content.text,
        from_email=definition.from_.email,
        from_name=definition.from_.name,
        reply_to=definition.reply_to,
        headers=[("X-Mailcore-Campaign", campaign_id)],
        track_opens=definition.tracking.opens,
        track_clicks=definition.tracking.clicks,
        tracking_base=public_url.rstrip("/"),
        **signing,
    )


def _text(value: Any) -> str:
    return value if isinstance(value, str) else _json.encode(value).decode()


def merge_values(work: RecipientWork) -> dict[str, str]:
    """The template values of one recipient: the contact's fields by template path."""
    assert work.email is not None
    values = {"email": work.email}
    if work.first_name:
        values["firstName"] = work.first_name
    if work.last_name:
        values["lastName"] = work.last_name
    for key, value in work.custom_fields.items():
        values["customFields." + key] = value if isinstance(value, str) else _text(value)
    return values


class BatchRenderer:
    """Renders claimed recipients of one campaign: Message-IDs, signed unsubscribe URLs."""

    def __init__(
        self,
        definition: CampaignCreate,
        campaign_id: str,
        campaign_seq: int,
        *,
        public_url: str,
        message_id_domain: str,
        signer: TokenSigner,
        clock: Clock,
        bounce_domain: str = "",
        secret_key: str = "",
        dkim: Mapping[str, DkimKey] | None = None,
    ) -> None:
        self.definition = definition
        self.campaign_id = campaign_id
        self.sender = definition.from_.email
        self._engine = renderer_for(definition, campaign_id, public_url, dkim)
        self._tracked = definition.tracking.opens or definition.tracking.clicks
        domain = message_id_domain or definition.from_.email.rpartition("@")[2]
        self._signer = signer
        self._clock = clock
        self._verp = (
            verp_codec(secret_key).encoder("bounces", bounce_domain, campaign_seq)
            if bounce_domain
            else None
        )
        # The leading bytes of every token of this campaign (kind ‖ campaign seq), and the
        # fixed parts of the strings built per recipient: encoded once, not per message.
        self._unsubscribe_prefix = UNSUBSCRIBE + varint(campaign_seq)
        self._tracking_prefix = TRACKING + varint(campaign_seq)
        self._unsubscribe_base = f"{public_url.rstrip('/')}/u/"
        self._message_id_head = f"{campaign_id}."
        self._message_id_tail = f"@{domain}"

    def envelope_senders(self, work: list[RecipientWork]) -> list[str]:
        """MAIL FROM of each recipient, in order: a signed VERP address when a bounce
        domain is set."""
        if self._verp is None:
            return [self.sender] * len(work)
        verp = self._verp
        return [verp(w.contact_seq) for w in work]

    def render(self, work: list[RecipientWork]) -> list[bytes]:
        """Runs in a worker thread; the engine renders with the GIL released."""
        now = self._clock()
        signer = self._signer
        seqs = [w.contact_seq for w in work]
        head, tail = self._message_id_head, self._message_id_tail
        return self._engine.render_batch(
            [merge_values(w) for w in work],
            # Deterministic per recipient: a retry after a crash carries the same
            # Message-ID, which lets receivers drop the duplicate.
            message_ids=[f"{head}{seq}{tail}" for seq in seqs],
            unsubscribe_urls=signer.sign_many(
                self._unsubscribe_prefix, seqs, self._unsubscribe_base
            ),
            date=format_datetime(now),
            dkim_timestamp=int(now.timestamp()),
            tracking_tokens=(
                signer.sign_many(self._tracking_prefix, seqs) if self._tracked else None
            ),
        )
