"""The send pipeline of one process.

    feeder ──claims a batch (lease)──► renders it (engine, GIL released, worker thread)
        ──memory stream──► N connection workers (one SMTP connection each)
        ──memory stream──► recorder: results committed in groups ─► settle when done

Structured concurrency: everything runs in one task group under :meth:`Dispatcher.run`.
Recipients in flight are bounded by the batch size and the stream buffers, which is also
the bound on duplicates if the process dies (they are leased, not yet recorded).
"""

from __future__ import annotations

import logging
import math
import ssl
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio
import msgspec
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ..ids import iso
from ..models import CampaignCreate
from ..node import SenderActivity
from ..smtp import RelayConfig, SmtpConnection, SmtpConnectionLost, SmtpError
from ..store import RecipientResult, SendRow
from ..tokens import TokenSigner
from .render import BatchRenderer
from .retry import next_attempt

if TYPE_CHECKING:
    from ..facade import Mailcore

log = logging.getLogger("mailcore.sending")
_decode_definition = msgspec.json.Decoder(CampaignCreate).decode


class InFlightWindow:
    """Counts recipients leased and not yet recorded. The feeder reserves before it
    claims, the recorder releases after it commits: this number is the most a crash can
    send twice."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.used = 0
        self._changed = anyio.Event()

    async def reserve(self, n: int) -> None:
        while self.used + n > self.size:
            await self._changed.wait()
        self.used += n

    def release(self, n: int) -> None:
        if n:
            self.used -= n
            self._changed.set()
            self._changed = anyio.Event()


@dataclass(frozen=True, slots=True)
class Outbound:
    campaign_id: str
    contact_seq: int
    attempts: int  # attempts made before this one
    sender: str
    recipient: str
    content: bytes


class Dispatcher:
    def __init__(
        self,
        mc: Mailcore,
        *,
        relay: RelayConfig | None = None,
        tls_context: ssl.SSLContext | None = None,
        poll_seconds: float = 1.0,
    ) -> None:
        self.mc = mc
        self.settings = mc.settings
        self.relay = relay or RelayConfig.from_url(mc.settings.smtp_url)
        self.tls_context = tls_context
        self.poll_seconds = poll_seconds
        self._signer = TokenSigner(mc.secret_key)
        self._renderers: dict[str, BatchRenderer] = {}
        self._wakeup = anyio.Event()
        self._relay_down_until = 0.0
        self._relay_backoff = 0.0
        self._failing: set[str] = set()  # campaigns whose last_error is set
        self.window = InFlightWindow(mc.settings.max_in_flight)
        self.activity = SenderActivity(in_flight_now=lambda: self.window.used)

    def _now(self) -> float:
        return self.mc.clock().timestamp()

    def wake(self) -> None:
        """A send started or was cancelled: look for work now rather than at the next poll."""
        self._wakeup.set()

    # -- the task tree -------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        # What a stopped sender leased was never recorded: on SQLite (one node owns the
        # file) all of it goes back to the queue at once; on PostgreSQL only expired
        # leases do, since the others belong to live nodes.
        released = await self.mc.store.recover_leases(self._now())
        if released:
            log.info("resuming: %d recipients were in flight when a sender stopped", released)
        self.mc.node.sender = self.activity
        n = self.settings.smtp_connections
        # Room for one rendered batch: the feeder claims and renders the next batch while
        # the workers drain this one, so the connections never wait for the database.
        out_tx, out_rx = anyio.create_memory_object_stream[Outbound](self.settings.send_batch_size)
        res_tx, res_rx = anyio.create_memory_object_stream[RecipientResult](
            self.settings.result_group_size
        )
        self.mc.add_send_listener(self.wake)
        try:
            async with anyio.create_task_group() as tg:
                async with out_rx, res_tx:
                    for _ in range(n):
                        tg.start_soon(self._connection_worker, out_rx.clone(), res_tx.clone())
                tg.start_soon(self._recorder, res_rx)
                tg.start_soon(self._renew_leases)
                task_status.started()
                await self._feeder(out_tx)
        finally:
            self.mc.remove_send_listener(self.wake)

    # -- feeder --------------------------------------------------------------------

    async def _feeder(self, out: MemoryObjectSendStream[Outbound]) -> None:
        async with out:
            while True:
                await self._wait_for_relay()
                worked = False
                sends = await self.mc.store.active_sends()
                for gone in self.activity.campaigns.keys() - {s.campaign_id for s in sends}:
                    del self.activity.campaigns[gone]  # finished (maybe by another node)
                for send in sends:
                    if await self._feed_one(send, out):
                        worked = True
                if not worked:
                    with anyio.move_on_after(self.poll_seconds):
                        await self._wakeup.wait()
                    self._wakeup = anyio.Event()

    async def _feed_one(self, send: SendRow, out: MemoryObjectSendStream[Outbound]) -> bool:
        store = self.mc.store
        work = []
        if send.status == "sending":
            size = self.settings.send_batch_size
            await self.window.reserve(size)
            now = self._now()
            try:
                work = await store.claim_recipients(
                    send.campaign_id,
                    size,
                    now,
                    now + self.settings.lease_seconds,
                    owner=self.mc.node.id,
                )
            finally:
                self.window.release(size - len(work))
            self.activity.last_claim_at = now
            if work:
                self.activity.campaigns.setdefault(send.campaign_id, 0)
        if not work:
            done = await store.finish_send_if_done(send.campaign_id, iso(self.mc.clock()))
            if done is not None:
                self._finished(done)
            return False
        renderer = await self._renderer(send)
        sendable = [w for w in work if w.email is not None and w.contact_status == "subscribed"]
        suppressed = [
            RecipientResult(
                campaign_id=send.campaign_id,
                contact_seq=w.contact_seq,
                state="suppressed",
                reply="contact deleted" if w.email is None else f"contact is {w.contact_status}",
                attempted=False,
            )
            for w in work
            if w not in sendable
        ]
        if suppressed:
            await store.record_results(suppressed, iso(self.mc.clock()))
            self.window.release(len(suppressed))
        if not sendable:
            return True
        messages = await anyio.to_thread.run_sync(renderer.render, sendable)
        for w, content in zip(sendable, messages, strict=True):
            assert w.email is not None
            await out.send(
                Outbound(
                    campaign_id=send.campaign_id,
                    contact_seq=w.contact_seq,
                    attempts=w.attempts,
                    sender=renderer.envelope_sender(w.contact_seq),
                    recipient=w.email,
                    content=content,
                )
            )
        return True

    async def _renderer(self, send: SendRow) -> BatchRenderer:
        renderer = self._renderers.get(send.campaign_id)
        if renderer is None:
            row = await self.mc.store.get_campaign(send.account_id, send.campaign_id)
            assert row is not None, "a send's campaign exists"
            renderer = BatchRenderer(
                _decode_definition(row.definition),
                row.id,
                row.seq,
                public_url=self.settings.public_url,
                message_id_domain=self.settings.message_id_domain,
                signer=self._signer,
                clock=self.mc.clock,
                bounce_domain=self.settings.bounce_domain,
                secret_key=self.mc.secret_key,
                dkim=self.settings.dkim,
            )
            self._renderers[send.campaign_id] = renderer
        return renderer

    def _finished(self, send: SendRow) -> None:
        self._renderers.pop(send.campaign_id, None)
        self._failing.discard(send.campaign_id)
        self.activity.campaigns.pop(send.campaign_id, None)
        log.info(
            "campaign %s %s: charged %s micros", send.campaign_id, send.status, send.charged_micros
        )

    async def _renew_leases(self) -> None:
        """The node's heartbeat: while it runs, its leases never expire, so no other node
        takes over work that is merely slow; once it dies they expire within
        ``lease_seconds`` and the others claim them."""
        while True:
            await anyio.sleep(self.settings.lease_seconds / 3)
            await self.mc.store.renew_leases(
                self.mc.node.id, self._now() + self.settings.lease_seconds
            )

    # -- relay health --------------------------------------------------------------

    async def _wait_for_relay(self) -> None:
        delay = self._relay_down_until - self._now()
        if delay > 0:
            await anyio.sleep(delay)

    def _relay_failed(self) -> None:
        self._relay_backoff = min(max(self._relay_backoff * 2, 0.5), 30.0)
        self._relay_down_until = self._now() + self._relay_backoff

    def _relay_ok(self) -> None:
        self._relay_backoff = 0.0
        self._relay_down_until = 0.0

    # -- connection workers --------------------------------------------------------

    async def _connection_worker(
        self,
        inbox: MemoryObjectReceiveStream[Outbound],
        results: MemoryObjectSendStream[RecipientResult],
    ) -> None:
        conn: SmtpConnection | None = None
        async with inbox, results:
            try:
                async for msg in inbox:
                    if conn is None or conn.broken or conn.closed:
                        conn = await self._connect(msg, results)
                        if conn is None:
                            continue
                    result = await self._deliver(conn, msg)
                    await results.send(result)
            finally:
                if conn is not None:
                    with anyio.CancelScope(shield=True):
                        await conn.aclose()

    async def _connect(
        self, msg: Outbound, results: MemoryObjectSendStream[RecipientResult]
    ) -> SmtpConnection | None:
        """A connection to the relay, or None after handing ``msg`` back untried."""
        error: str
        if self._now() < self._relay_down_until:
            error = "relay unavailable, backing off"
        else:
            try:
                conn = await SmtpConnection.open(self.relay, tls_context=self.tls_context)
            except SmtpError as exc:
                error = f"relay {self.relay.host}:{self.relay.port} unavailable: {exc}"
                self._relay_failed()
                log.warning("%s", error)
            else:
                self._relay_ok()
                return conn
        if msg.campaign_id not in self._failing:
            self._failing.add(msg.campaign_id)
            await self.mc.store.set_send_error(msg.campaign_id, error)
        await results.send(
            RecipientResult(
                campaign_id=msg.campaign_id,
                contact_seq=msg.contact_seq,
                state="queued",
                reply=error,
                attempted=False,
            )
        )
        return None

    async def _deliver(self, conn: SmtpConnection, msg: Outbound) -> RecipientResult:
        try:
            outcome = await conn.send(msg.sender, [msg.recipient], msg.content)
        except SmtpConnectionLost as exc:
            # After the final dot the server may have taken the message: retrying risks one
            # duplicate, giving up risks a loss. Like every MTA, retry.
            what = "after the message (it may have arrived)" if exc.outcome_unknown else ""
            return self._outcome(msg, "deferred", f"connection lost {what}: {exc}")
        except SmtpError as exc:
            return self._outcome(msg, "deferred", f"{type(exc).__name__}: {exc}")
        state = outcome.status(msg.recipient)
        if msg.campaign_id in self._failing:
            self._failing.discard(msg.campaign_id)
            await self.mc.store.set_send_error(msg.campaign_id, None)
        reply = outcome.data if outcome.data is not None else outcome.recipients[0][1]
        if state != "delivered":
            reply = next(
                (
                    r
                    for r in (outcome.mail, outcome.recipients[0][1], outcome.data)
                    if r is not None and not r.is_positive
                ),
                reply,
            )
        return self._outcome(msg, state, f"{reply.code} {reply.text}".strip())

    def _outcome(self, msg: Outbound, state: str, reply: str) -> RecipientResult:
        next_at = None
        if state == "deferred":
            next_at = next_attempt(msg.attempts + 1, self.settings.retry_schedule, self._now())
            if next_at is None:
                state = "failed"
        return RecipientResult(
            campaign_id=msg.campaign_id,
            contact_seq=msg.contact_seq,
            state=state,
            reply=reply[:1000],
            next_attempt_at=next_at,
        )

    # -- recorder ------------------------------------------------------------------

    async def _recorder(self, inbox: MemoryObjectReceiveStream[RecipientResult]) -> None:
        group: list[RecipientResult] = []
        deadline = math.inf
        async with inbox:
            try:
                while True:
                    item: RecipientResult | None = None
                    closed = False
                    with anyio.move_on_after(max(0.0, deadline - anyio.current_time())):
                        try:
                            item = await inbox.receive()
                        except anyio.EndOfStream:
                            closed = True
                    if item is not None:
                        if not group:
                            deadline = anyio.current_time() + self.settings.result_flush_seconds
                        group.append(item)
                    full = len(group) >= self.settings.result_group_size
                    if group and (closed or full or anyio.current_time() >= deadline):
                        await self._commit(group)
                        group = []
                        deadline = math.inf
                    if closed:
                        return
            finally:
                # On shutdown, what was sent is recorded, so a restart does not send it again.
                if group:
                    with anyio.CancelScope(shield=True):
                        await self.mc.store.record_results(group, iso(self.mc.clock()))

    async def _commit(self, group: list[RecipientResult]) -> None:
        with anyio.CancelScope(shield=True):
            await self.mc.store.record_results(group, iso(self.mc.clock()))
        self.window.release(len(group))
        self.activity.recorded += len(group)
        for r in group:
            if r.campaign_id in self.activity.campaigns:
                self.activity.campaigns[r.campaign_id] += 1
        for campaign_id in {r.campaign_id for r in group}:
            done = await self.mc.store.finish_send_if_done(campaign_id, iso(self.mc.clock()))
            if done is not None:
                self._finished(done)
        if any(r.state == "deferred" or r.state == "queued" for r in group):
            self.wake()
