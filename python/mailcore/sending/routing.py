"""Where a message goes: destinations (a relay, or a receiving domain's MX hosts) with
their limits, and the rules that pick one for a message.

Relay mode: the ``[[relays]]`` table (or the one relay at ``smtp_url``); a message's
candidates are the relays whose ``from_domains`` match its from-address domain, in the
table's order, and it goes to the first that is not backing off after failed connects
(failover). Direct mode: one destination per recipient domain. Receiving-domain rates
(``[domains."gmail.com"]``) apply in both modes.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import anyio
import msgspec

from ..config import RelayRoute, Settings
from ..smtp import RelayConfig
from .throttle import AdaptiveLimit, RateLimiter


class Outbound(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A rendered message on its way. A msgspec Struct rather than a frozen dataclass:
    one is built per message, and a frozen dataclass's ``__init__`` (an
    ``object.__setattr__`` per field) costs over ten times as much."""

    campaign_id: str
    contact_seq: int
    attempts: int  # attempts made before this one
    first_attempt_at: float | None
    sender: str
    from_domain: str
    recipient: str
    content: bytes
    not_before: float = 0.0  # the rate limiter's slot (clock seconds)


@dataclass(eq=False, slots=True)
class Destination:
    """One place mail is handed to, with its own connection pool and limits."""

    key: str
    limit: AdaptiveLimit
    rate: RateLimiter
    messages_per_connection: int
    relay: RelayConfig | None = None  # relay mode
    domain: str | None = None  # direct mode: the recipient domain
    workers: int = 0  # connection workers running (each holds at most one connection)
    waiting: int = 0  # workers waiting for a message
    connections: int = 0  # open now
    peak_connections: int = 0
    down_until: float = 0.0  # connects failed: not tried again before this time
    backoff: float = 0.0
    last_error: str | None = None
    last_used: float = 0.0
    # Unbounded: the dispatcher's in-flight window bounds what is queued in all. A deque
    # and an event rather than a memory stream: a worker whose wait times out can never
    # have taken a message with it.
    _queue: deque[Outbound] = field(default_factory=deque, repr=False)
    _arrived: anyio.Event = field(default_factory=anyio.Event, repr=False)

    @property
    def queued(self) -> int:
        return len(self._queue)

    def put(self, msg: Outbound) -> None:
        self._queue.append(msg)
        self._arrived.set()

    def put_many(self, msgs: list[Outbound]) -> None:
        if msgs:
            self._queue.extend(msgs)
            self._arrived.set()

    def take(self) -> Outbound | None:
        return self._queue.popleft() if self._queue else None

    def take_many(self, n: int, until: float | None = None) -> list[Outbound]:
        """Up to ``n`` queued messages, oldest first; with ``until``, only those whose rate
        slot (``not_before``) is no later (the first one always: it is due next)."""
        queue = self._queue
        out: list[Outbound] = []
        while queue and len(out) < n:
            if out and until is not None and queue[0].not_before > until:
                break
            out.append(queue.popleft())
        return out

    def give_back(self, msgs: list[Outbound]) -> None:
        """Put messages taken but not sent back at the head of the queue, in order."""
        if msgs:
            self._queue.extendleft(reversed(msgs))
            self._arrived.set()

    async def wait(self, seconds: float) -> Outbound | None:
        """The next message, or None after ``seconds`` with none."""
        if self._queue:  # the common case under load: no timer, no checkpoint
            return self._queue.popleft()
        with anyio.move_on_after(seconds):
            while not self._queue:
                if self._arrived.is_set():
                    self._arrived = anyio.Event()
                self.waiting += 1
                try:
                    await self._arrived.wait()
                finally:
                    self.waiting -= 1
        return self.take()

    def wants_worker(self) -> bool:
        return self.workers < self.limit.current_connections and self.queued > self.waiting

    def is_down(self, now: float) -> bool:
        return now < self.down_until

    def connect_failed(self, now: float) -> float:
        """Back off (0.5 s doubling to 30 s); the seconds until the next try. Connects
        that were already under way when the first one failed do not double it again."""
        if now < self.down_until:
            return self.down_until - now
        self.backoff = min(max(self.backoff * 2, 0.5), 30.0)
        self.down_until = now + self.backoff
        return self.backoff

    def connect_ok(self) -> None:
        self.backoff = 0.0
        self.down_until = 0.0

    def opened(self) -> None:
        self.connections += 1
        self.peak_connections = max(self.peak_connections, self.connections)

    def closed(self) -> None:
        self.connections -= 1


def _matches(patterns: tuple[str, ...], domain: str) -> bool:
    if not patterns:
        return True
    for p in patterns:
        p = p.lower()
        if p.startswith("*."):
            if domain.endswith(p[1:]):
                return True
        elif domain == p:
            return True
    return False


class Router:
    """The destinations of one dispatcher and the rules that choose among them."""

    def __init__(self, settings: Settings, *, relay: RelayConfig | None = None) -> None:
        self.settings = settings
        self.direct = settings.delivery == "direct" and relay is None
        routes: list[tuple[RelayRoute, RelayConfig]]
        if relay is not None or not settings.relays:
            cfg = relay or RelayConfig.from_url(settings.smtp_url)
            route = RelayRoute(url=settings.smtp_url, name="relay", rate=settings.smtp_rate)
            routes = [(route, cfg)]
        else:
            routes = [(r, RelayConfig.from_url(r.url)) for r in settings.relays]
        self.relays: list[tuple[RelayRoute, Destination]] = []
        for i, (route, cfg) in enumerate(routes):
            name = route.name or f"relay{i + 1}"
            self.relays.append(
                (
                    route,
                    Destination(
                        key=f"relay:{name}",
                        limit=AdaptiveLimit(
                            route.connections or settings.smtp_connections,
                            route.rate,
                            settings.throttle_recover_seconds,
                        ),
                        rate=RateLimiter(route.rate, burst=max(1.0, route.rate / 10)),
                        messages_per_connection=(
                            route.messages_per_connection or settings.messages_per_connection
                        ),
                        relay=cfg,
                    ),
                )
            )
        self._domains: dict[str, Destination] = {}
        self._domain_rates: dict[str, RateLimiter] = {
            d.lower(): RateLimiter(lim.rate, burst=max(1.0, lim.rate / 10))
            for d, lim in settings.domains.items()
            if lim.rate > 0
        }

    def destinations(self) -> list[Destination]:
        return [d for _, d in self.relays] + list(self._domains.values())

    def relay_candidates(self, from_domain: str) -> list[Destination]:
        return [d for r, d in self.relays if _matches(r.from_domains, from_domain)]

    def for_domain(self, domain: str) -> Destination:
        """The direct-delivery destination of a recipient domain."""
        dest = self._domains.get(domain)
        if dest is None:
            lim = self.settings.domains.get(domain)
            rate = lim.rate if lim else 0.0
            connections = (lim.connections if lim else 0) or self.settings.direct_connections
            per_conn = (
                lim.messages_per_connection if lim else 0
            ) or self.settings.messages_per_connection
            dest = Destination(
                key=f"mx:{domain}",
                limit=AdaptiveLimit(connections, rate, self.settings.throttle_recover_seconds),
                rate=RateLimiter(rate, burst=max(1.0, rate / 10)),
                messages_per_connection=per_conn,
                domain=domain,
            )
            self._domains[domain] = dest
        return dest

    @property
    def domain_rates(self) -> bool:
        """Relay mode with receiving-domain rates configured (else no message needs its
        recipient domain looked up)."""
        return not self.direct and bool(self._domain_rates)

    def domain_rate(self, domain: str) -> RateLimiter | None:
        """Relay mode: the receiving domain's own rate (direct destinations carry theirs)."""
        return None if self.direct else self._domain_rates.get(domain)

    def forget_idle(self, now: float, idle_seconds: float) -> None:
        """Drop direct-delivery destinations nobody used for a while (their limits reset)."""
        for domain, dest in list(self._domains.items()):
            if dest.workers == 0 and dest.queued == 0 and now - dest.last_used > idle_seconds:
                del self._domains[domain]


__all__ = ["Destination", "Outbound", "Router"]
