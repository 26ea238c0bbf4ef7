"""The send pipeline of one process.

    feeder ──claims a batch (lease)──► renders it (engine, GIL released, worker thread)
        ──routes each message──► its destination's queue (a relay, or a recipient domain's
        MX hosts: routing.py), whose connection workers (one SMTP connection each, up to
        the destination's adaptive limit, reused, closed when idle) deliver it
        ──memory stream──► recorder: results committed in groups ─► settle when done

Structured concurrency: everything runs in one task group under :meth:`Dispatcher.run`;
connection workers are started in it on demand. Recipients in flight are bounded by the
in-flight window (leased, not yet recorded), which is also the bound on duplicates if the
process dies. Rate limits book a slot per message (throttle.py); a message whose slot is
further away than ``throttle_max_wait_seconds`` goes back to the database, deferred.
"""

from __future__ import annotations

import logging
import ssl
from typing import TYPE_CHECKING

import anyio
import msgspec
from anyio.abc import TaskGroup, TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ..ids import iso
from ..models import CampaignCreate
from ..node import SenderActivity, sender_running
from ..smtp import (
    RelayConfig,
    Reply,
    SendOutcome,
    SmtpConnection,
    SmtpConnectionLost,
    SmtpError,
    SmtpUntried,
)
from ..store import RecipientResult, RecipientWork, SendRow
from ..tokens import TokenSigner
from .direct import DirectDelivery
from .render import BatchRenderer
from .retry import next_attempt
from .routing import Destination, Outbound, Router
from .throttle import is_throttling

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
        self.router = Router(mc.settings, relay=relay)
        self.tls_context = tls_context
        self.poll_seconds = poll_seconds
        self._signer = TokenSigner(mc.secret_key)
        self._renderers: dict[str, BatchRenderer] = {}
        self._wakeup = anyio.Event()
        self._status_changed = anyio.Event()
        self._sends_changed = False  # wake() was called since the feeder read the sends
        self._failing: set[str] = set()  # campaigns whose last_error is set
        self._paused: set[str] = set()
        self.window = InFlightWindow(mc.settings.max_in_flight)
        self.activity = SenderActivity(in_flight_now=lambda: self.window.used)
        # Results go to the recorder a list at a time (a connection's pipelined batch, or
        # one handed-back message): one stream item per batch rather than per message.
        self._results: MemoryObjectSendStream[list[RecipientResult]] | None = None
        self._tg: TaskGroup | None = None
        self._direct: DirectDelivery | None = None
        if self.router.direct:
            self._direct = DirectDelivery(mc.settings)

    def _now(self) -> float:
        return self.mc.clock().timestamp()

    def wake(self) -> None:
        """A send started, paused, resumed or was cancelled: look for work now."""
        self._wakeup.set()
        self._status_changed.set()
        self._sends_changed = True

    # -- the task tree -------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        # What a stopped sender leased was never recorded: it goes back to the queue; the
        # leases of live senders (other processes, other nodes) stay theirs.
        released = await self.mc.store.recover_leases(self._now())
        if released:
            log.info("resuming: %d recipients were in flight when a sender stopped", released)
        with sender_running(self.mc.node.id):
            await self._run(task_status)

    async def _run(self, task_status: TaskStatus[None]) -> None:
        self.mc.node.sender = self.activity
        res_tx, res_rx = anyio.create_memory_object_stream[list[RecipientResult]](
            self.settings.result_group_size
        )
        self.mc.add_send_listener(self.wake)
        try:
            async with anyio.create_task_group() as tg, res_tx:
                self._tg = tg
                self._results = res_tx
                tg.start_soon(self._recorder, res_rx)
                tg.start_soon(self._limits)
                tg.start_soon(self._renew_leases)
                tg.start_soon(self._watch_pauses)
                task_status.started()
                await self._feeder()
        finally:
            self.mc.remove_send_listener(self.wake)

    async def _watch_pauses(self) -> None:
        """Keeps the set of paused campaigns current even while the feeder waits for
        room in the window, so a pause also stops what is already queued in memory."""
        while True:
            with anyio.move_on_after(self.poll_seconds):
                await self._status_changed.wait()
            self._status_changed = anyio.Event()
            self._note_paused(await self.mc.store.active_sends())

    def _note_paused(self, sends: list[SendRow]) -> None:
        self._paused = {s.campaign_id for s in sends if s.status == "paused"}

    # -- feeder --------------------------------------------------------------------

    async def _feeder(self) -> None:
        while True:
            await self._wait_for_relays()
            self._sends_changed = False
            sends = await self.mc.store.active_sends()
            self._note_paused(sends)
            for gone in self.activity.campaigns.keys() - {s.campaign_id for s in sends}:
                del self.activity.campaigns[gone]  # finished (maybe by another node)
            # The same sends are fed round after round while they have work, not read
            # again for each batch (a read per batch cost as much as the claim in the
            # send benchmark's feeder). They are read again when one is started, paused,
            # resumed or cancelled here (wake), when a round finds no work, and at least
            # every poll_seconds; a claim checks the send's status in its own
            # transaction anyway, so a stale list never leases a paused send's work.
            read_again_at = anyio.current_time() + self.poll_seconds
            while True:
                worked = False
                for send in sends:
                    if (
                        send.status != "paused"
                        and send.campaign_id not in self._paused
                        and await self._feed_one(send)
                    ):
                        worked = True
                if (
                    not worked
                    or self._sends_changed
                    or anyio.current_time() >= read_again_at
                    or self._relay_delay() > 0  # every relay backs off: wait above
                ):
                    break
            if not worked:
                with anyio.move_on_after(self.poll_seconds):
                    await self._wakeup.wait()
                self._wakeup = anyio.Event()

    async def _feed_one(self, send: SendRow) -> bool:
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
        sendable: list[RecipientWork] = []
        suppressed: list[RecipientResult] = []
        for w in work:
            if w.email is not None and w.contact_status == "subscribed":
                sendable.append(w)
            else:
                suppressed.append(
                    RecipientResult(
                        campaign_id=send.campaign_id,
                        contact_seq=w.contact_seq,
                        state="suppressed",
                        reply=(
                            "contact deleted"
                            if w.email is None
                            else f"contact is {w.contact_status}"
                        ),
                        attempted=False,
                    )
                )
        if suppressed:
            await store.record_results(suppressed, iso(self.mc.clock()))
            self.window.release(len(suppressed))
        if not sendable:
            return True
        messages = await anyio.to_thread.run_sync(renderer.render, sendable)
        from_domain = renderer.sender.rpartition("@")[2].lower()
        campaign_id = send.campaign_id
        # The whole batch routed in one call (no await per message).
        await self._dispatch_many(
            [
                Outbound(
                    campaign_id=campaign_id,
                    contact_seq=w.contact_seq,
                    attempts=w.attempts,
                    first_attempt_at=w.first_attempt_at,
                    sender=sender,
                    from_domain=from_domain,
                    recipient=w.email,  # type: ignore[arg-type]  # sendable: not None
                    content=content,
                )
                for w, sender, content in zip(
                    sendable, renderer.envelope_senders(sendable), messages, strict=True
                )
            ]
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
        store = self.mc.store
        while True:
            await anyio.sleep(self.settings.lease_seconds / 3)
            now = self._now()
            await store.renew_leases(self.mc.node.id, now + self.settings.lease_seconds)
            # A stopped sender's leases go back to the queue here: at once when the store
            # can tell it stopped (SQLite: a process of this machine that is gone), else
            # once they expire.
            released = await store.recover_leases(now)
            if released:
                log.info("%d recipients of a stopped sender back in the queue", released)
                self.wake()

    async def _wait_for_relays(self) -> None:
        """Relay mode with every relay backing off: nothing can go out before one is due."""
        delay = self._relay_delay()
        if delay > 0:
            await anyio.sleep(delay)

    def _relay_delay(self) -> float:
        """Seconds until a relay is due again (0 or less: one is up, or direct delivery)."""
        if self.router.direct:
            return 0.0
        return min(d.down_until for _, d in self.router.relays) - self._now()

    # -- routing -------------------------------------------------------------------

    async def _dispatch_many(self, msgs: list[Outbound]) -> None:
        """Queue each message on its destination (starting connection workers while the
        destination has room for them), or hand it back to the database; in order, with
        what is the same for all of
        them (the clock, a from-domain's relay) worked out once."""
        now = self._now()
        mono = anyio.current_time()
        router = self.router
        direct = router.direct
        domain_rates = router.domain_rates
        max_wait = self.settings.throttle_max_wait_seconds
        relays: dict[str, Destination | str] = {}  # from-domain: its relay, or why none
        # What goes on each destination's queue, put there at the end in one call each.
        queued: dict[Destination, list[Outbound]] = {}
        last: Destination | None = None
        last_queued: list[Outbound] = []
        for msg in msgs:
            dest: Destination | str | None
            if direct:
                domain = msg.recipient.rpartition("@")[2].lower()
                dest = router.for_domain(domain)
            else:
                dest = relays.get(msg.from_domain)
                if dest is None:
                    dest = relays[msg.from_domain] = self._relay_for(msg.from_domain, now)
                if isinstance(dest, str):
                    await self._hand_back(msg, dest, error=True)
                    continue
                domain = msg.recipient.rpartition("@")[2].lower() if domain_rates else ""
            delay = dest.rate.reserve(mono)
            domain_rate = router.domain_rate(domain) if domain_rates else None
            if domain_rate is not None:
                delay = max(delay, domain_rate.reserve(mono))
            if delay > max_wait:
                # Rather than hold it in memory, put it back in the queue for when its
                # slot comes.
                dest.rate.cancel()
                if domain_rate is not None:
                    domain_rate.cancel()
                await self._emit(
                    msg,
                    "deferred",
                    f"throttled: {dest.key} is rate limited, next slot in {delay:.1f} s",
                    attempted=False,
                    next_attempt_at=now + delay,
                )
                continue
            if delay > 0:
                msg = msgspec.structs.replace(msg, not_before=mono + delay)
            dest.last_used = now
            if dest is not last:
                last, last_queued = dest, queued.setdefault(dest, [])
            last_queued.append(msg)
        for dest, batch in queued.items():
            dest.put_many(batch)
            # As many workers as one _grow per message queued would have started.
            while dest.wants_worker():
                self._grow(dest)

    def _relay_for(self, from_domain: str, now: float) -> Destination | str:
        """Relay mode: the relay a message from ``from_domain`` goes to now, or the reason
        it goes back to the database instead."""
        candidates = self.router.relay_candidates(from_domain)
        if not candidates:
            return f"no relay is configured for the from-domain {from_domain}"
        dest = next((d for d in candidates if not d.is_down(now)), None)
        if dest is None:
            names = ", ".join(d.key.partition(":")[2] for d in candidates)
            return f"relay unavailable ({names}), backing off"
        return dest

    def _grow(self, dest: Destination) -> None:
        if dest.wants_worker():
            assert self._tg is not None
            dest.workers += 1
            self._tg.start_soon(self._connection_worker, dest)

    async def _hand_back(self, msg: Outbound, reason: str, *, error: bool = False) -> None:
        """Back to the queue untried (no attempt counted), e.g. no relay is reachable."""
        if error and msg.campaign_id not in self._failing:
            self._failing.add(msg.campaign_id)
            await self.mc.store.set_send_error(msg.campaign_id, reason)
        await self._emit(msg, "queued", reason, attempted=False)

    async def _send_result(self, result: RecipientResult) -> None:
        assert self._results is not None
        await self._results.send([result])

    async def _emit(
        self,
        msg: Outbound,
        state: str,
        reply: str,
        *,
        attempted: bool = True,
        next_attempt_at: float | None = None,
    ) -> None:
        assert self._results is not None
        now = self._now() if attempted else None
        await self._results.send(
            [_result(msg, state, reply, next_attempt_at, attempted=attempted, now=now)]
        )

    async def _limits(self) -> None:
        """Give throttled destinations their limits back as they stay quiet."""
        while True:
            await anyio.sleep(1.0)
            now = anyio.current_time()
            for dest in self.router.destinations():
                if dest.limit.tick(now):
                    dest.rate.rate = dest.limit.current_rate
                    log.info(
                        "%s: limits raised to %d connections, %.1f msg/s",
                        dest.key,
                        dest.limit.current_connections,
                        dest.limit.current_rate,
                    )
                    self._grow(dest)
            self.router.forget_idle(self._now(), 10 * self.settings.smtp_idle_seconds)

    def _throttled(self, dest: Destination, reply: Reply) -> None:
        before = dest.limit.current_connections
        dest.limit.throttled(anyio.current_time())
        dest.rate.rate = dest.limit.current_rate
        if dest.limit.current_connections != before:
            log.warning(
                "%s throttles (%s %s): down to %d connections",
                dest.key,
                reply.code,
                reply.text,
                dest.limit.current_connections,
            )

    # -- connection workers --------------------------------------------------------

    async def _connection_worker(self, dest: Destination) -> None:
        """One SMTP connection to ``dest``, reused for up to messages_per_connection
        messages, closed when idle or when the destination's limit shrank. Messages go in
        batches of up to ``pipeline_depth``, pipelined on the connection (send_many)."""
        conn: SmtpConnection | None = None
        sent_on_conn = 0
        stopping = False
        depth = self.settings.pipeline_depth
        try:
            while True:
                msg = await dest.wait(self.settings.smtp_idle_seconds)
                if msg is None:
                    if dest.queued:
                        continue
                    return  # idle: the connection is closed below
                if msg.campaign_id in self._paused:
                    await self._emit(msg, "queued", "campaign paused", attempted=False)
                    continue
                if dest.workers > dest.limit.current_connections:
                    dest.give_back([msg])  # throttled: fewer connections from now on
                    return
                if msg.not_before:  # a rate slot was booked for it (else it is due now)
                    wait = msg.not_before - anyio.current_time()
                    if wait > 0:
                        await anyio.sleep(wait)
                if conn is not None and (
                    not conn.usable or sent_on_conn >= dest.messages_per_connection
                ):
                    await self._close(dest, conn)
                    conn = None
                if conn is None:
                    conn = await self._open(dest, msg)
                    sent_on_conn = 0
                    if conn is None:
                        return
                # What else is due by now goes in the same pipeline (rate slots are booked
                # in queue order, so this never sends a message before its slot).
                room = min(depth, dest.messages_per_connection - sent_on_conn) - 1
                batch = [msg]
                if room > 0:
                    for more in dest.take_many(room, until=anyio.current_time()):
                        if more.campaign_id in self._paused:
                            await self._emit(more, "queued", "campaign paused", attempted=False)
                        else:
                            batch.append(more)
                results, untried = await self._deliver(dest, conn, batch)
                sent_on_conn += len(batch) - len(untried)
                dest.give_back(untried)  # never reached the server: no attempt counted
                assert self._results is not None
                if results:
                    try:  # a checkpoint per batch is enough, not one per message
                        self._results.send_nowait(results)
                    except anyio.WouldBlock:
                        await self._results.send(results)
        except anyio.get_cancelled_exc_class():
            stopping = True
            raise
        finally:
            dest.workers -= 1
            if conn is not None:
                with anyio.CancelScope(shield=True):
                    await self._close(dest, conn)
            if not stopping:
                self._grow(dest)  # messages may have arrived that no other worker will take

    async def _close(self, dest: Destination, conn: SmtpConnection) -> None:
        dest.closed()
        await conn.aclose()

    async def _open(self, dest: Destination, msg: Outbound) -> SmtpConnection | None:
        """A connection for ``msg``; None after routing ``msg`` elsewhere (the worker ends)."""
        now = self._now()
        if self._direct is not None:
            assert dest.domain is not None
            if dest.is_down(now):
                # Tried moments ago and unreachable: same outcome, counted as an attempt.
                reason = dest.last_error or "451 4.4.1 destination unavailable"
                await self._send_result(self._outcome(msg, "deferred", reason))
                return None
            opened = await self._direct.open(dest.domain, self.tls_context)
            if isinstance(opened, SmtpConnection):
                dest.connect_ok()
                dest.opened()
                return opened
            reason = f"{opened.code} {opened.text}"
            if opened.is_permanent:  # the domain takes no mail (null MX, NXDOMAIN)
                await self._send_result(self._outcome(msg, "bounced", reason))
                return None
            if opened.code == 421:
                self._throttled(dest, opened)
            dest.last_error = reason
            dest.connect_failed(now)
            await self._send_result(self._outcome(msg, "deferred", reason))
            return None
        assert dest.relay is not None
        if not dest.is_down(now):
            try:
                conn = await SmtpConnection.open(dest.relay, tls_context=self.tls_context)
            except SmtpError as exc:
                error = f"{dest.key} {dest.relay.host}:{dest.relay.port} unavailable: {exc}"
                reply = getattr(exc, "reply", None)
                if isinstance(reply, Reply) and is_throttling(reply):
                    self._throttled(dest, reply)
                if dest.connections > 0:
                    # Others are connected: a refused connection is the server's limit,
                    # not an outage. The message waits for one of them.
                    log.info("%s", error)
                    dest.put(msg)
                    return None
                log.warning("%s", error)
                dest.connect_failed(now)
            else:
                dest.connect_ok()
                dest.opened()
                return conn
        # Down: this message and every one waiting for this relay fail over to the next
        # matching relay, or go back to the database. Taken off the queue first, then
        # routed once each: if the relay's backoff has run out meanwhile (a slow connect
        # attempt outlasts it), routing puts them back on this relay, and taking them
        # again in the same loop would spin forever without yielding.
        waiting = [msg]
        while (queued := dest.take()) is not None:
            waiting.append(queued)
        await self._dispatch_many(waiting)
        return None

    def _retry_at(self, msg: Outbound, now: float) -> float | None:
        """When a deferred message is tried again; None: retries are used up (fail)."""
        first = msg.first_attempt_at if msg.first_attempt_at is not None else now
        next_at = next_attempt(msg.attempts + 1, self.settings.retry_schedule, now)
        if next_at is None or next_at - first > self.settings.retry_max_age_seconds:
            return None
        return next_at

    async def _deliver(
        self, dest: Destination, conn: SmtpConnection, msgs: list[Outbound]
    ) -> tuple[list[RecipientResult], list[Outbound]]:
        """Send ``msgs`` on ``conn`` (pipelined when more than one): a result per message
        sent, and the messages the connection broke before (to send again, untried)."""
        sent: list[SendOutcome | SmtpError]
        if len(msgs) == 1:
            msg = msgs[0]
            try:
                sent = [await conn.send(msg.sender, [msg.recipient], msg.content)]
            except SmtpError as exc:
                sent = [exc]
        else:
            sent = await conn.send_many(
                [(m.sender, [m.recipient], m.content) for m in msgs],
                max_messages=len(msgs),
                max_bytes=self.settings.pipeline_bytes,
            )
        results: list[RecipientResult] = []
        untried: list[Outbound] = []
        now = self._now()  # one clock reading for the batch: its replies came together
        answered: str | None = None  # a campaign of a message the server answered
        # The last final reply's text: a server's replies are often the same object (the
        # reply reader shares equal lines).
        last_data: Reply | None = None
        last_text = ""
        for msg, outcome in zip(msgs, sent, strict=True):
            if isinstance(outcome, SendOutcome):
                data = outcome.data
                if (  # delivered, as outcome.status says (the common case, made directly)
                    data is not None
                    and data.code < 400
                    and outcome.mail.code < 400
                    and len(outcome.recipients) == 1
                    and outcome.recipients[0][1].code < 400
                ):
                    if data is not last_data:
                        last_data, last_text = data, f"{data.code} {data.text}".strip()[:1000]
                    results.append(
                        RecipientResult(
                            campaign_id=msg.campaign_id,
                            contact_seq=msg.contact_seq,
                            state="delivered",
                            reply=last_text,
                            attempted_at=now,
                        )
                    )
                else:
                    results.append(self._delivered(dest, msg, outcome, now))
                if answered != msg.campaign_id:
                    answered = msg.campaign_id
                    if answered in self._failing:
                        self._failing.discard(answered)
                        await self.mc.store.set_send_error(answered, None)
            elif isinstance(outcome, SmtpUntried) or (
                isinstance(outcome, SmtpConnectionLost) and outcome.behind
            ):
                # Never reached the server, or (behind) queued after a message whose reply
                # the server's close cut off: it stopped reading before this one.
                untried.append(msg)
            elif isinstance(outcome, SmtpConnectionLost):
                # After the final dot the server may have taken the message: retrying
                # risks one duplicate, giving up risks a loss. Like every MTA, retry.
                what = "after the message (it may have arrived)" if outcome.outcome_unknown else ""
                results.append(
                    self._outcome(msg, "deferred", f"connection lost {what}: {outcome}", now)
                )
            else:
                results.append(
                    self._outcome(msg, "deferred", f"{type(outcome).__name__}: {outcome}", now)
                )
        return results, untried

    def _delivered(
        self, dest: Destination, msg: Outbound, outcome: SendOutcome, now: float
    ) -> RecipientResult:
        state = outcome.status(msg.recipient)
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
            if is_throttling(reply):
                self._throttled(dest, reply)
        return self._outcome(msg, state, f"{reply.code} {reply.text}".strip(), now)

    def _outcome(
        self, msg: Outbound, state: str, reply: str, now: float | None = None
    ) -> RecipientResult:
        if now is None:
            now = self._now()
        next_at = None
        if state == "deferred":
            next_at = self._retry_at(msg, now)
            if next_at is None:
                state = "failed"
        return _result(msg, state, reply, next_at, attempted=True, now=now)

    # -- recorder ------------------------------------------------------------------

    async def _recorder(self, inbox: MemoryObjectReceiveStream[list[RecipientResult]]) -> None:
        # A group is committed once it holds ``result_group_size`` results (it may go over
        # by part of the last list taken), or ``result_flush_seconds`` after its first.
        group: list[RecipientResult] = []
        size = self.settings.result_group_size
        async with inbox:
            try:
                while True:
                    closed = False
                    if not group:
                        try:
                            group.extend(await inbox.receive())
                        except anyio.EndOfStream:
                            return
                        deadline = anyio.current_time() + self.settings.result_flush_seconds
                    # Take what is already there without a timer per result.
                    while len(group) < size:
                        try:
                            group.extend(inbox.receive_nowait())
                        except anyio.WouldBlock:
                            break
                        except anyio.EndOfStream:
                            closed = True
                            break
                    if not closed and len(group) < size:
                        with anyio.move_on_after(max(0.0, deadline - anyio.current_time())):
                            try:
                                group.extend(await inbox.receive())
                                continue
                            except anyio.EndOfStream:
                                closed = True
                    await self._commit(group)
                    group = []
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
        per_campaign: dict[str, int] = {}
        retry = False
        for r in group:
            per_campaign[r.campaign_id] = per_campaign.get(r.campaign_id, 0) + 1
            if not retry and (r.state == "deferred" or r.state == "queued"):
                retry = True
        campaigns = self.activity.campaigns
        for campaign_id, n in per_campaign.items():
            if campaign_id in campaigns:
                campaigns[campaign_id] += n
        for campaign_id in per_campaign:
            done = await self.mc.store.finish_send_if_done(campaign_id, iso(self.mc.clock()))
            if done is not None:
                self._finished(done)
        if retry:
            self.wake()


def _result(
    msg: Outbound,
    state: str,
    reply: str,
    next_attempt_at: float | None,
    *,
    attempted: bool,
    now: float | None,
) -> RecipientResult:
    """What is recorded of ``msg``: ``state``, the reply (its first 1,000 characters),
    when to try again, and (``attempted``) the time of this attempt, ``now``."""
    return RecipientResult(
        campaign_id=msg.campaign_id,
        contact_seq=msg.contact_seq,
        state=state,
        reply=reply[:1000],
        next_attempt_at=next_attempt_at,
        attempted=attempted,
        attempted_at=now if attempted else None,
    )
