"""Rate and concurrency limits of one destination (a relay or a receiving domain).

Pure bookkeeping on a clock value passed in: no sleeping, no I/O, so the rules are tested
with plain numbers. The dispatcher sleeps or defers on what these return.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..smtp import Reply


def is_throttling(reply: Reply) -> bool:
    """Replies that mean "slow down" rather than "this recipient, later": 421 (the server
    closes the session: too many connections, or not now), 4.7.28 (rate limited, as Gmail
    says it), 4.3.2 (not accepting messages now) and 4.4.5 (congested). Other 4xx, such
    as greylisting's 451 4.7.1, defer one recipient and leave the limits alone."""
    if reply.code == 421:
        return True
    if not reply.is_transient or reply.enhanced is None:
        return False
    return reply.enhanced[1:] in ((7, 28), (3, 2), (4, 5))


@dataclass(slots=True)
class RateLimiter:
    """A token bucket as a schedule (GCRA): ``reserve`` books the next free slot and says
    how long to wait for it. ``rate`` messages per second, ``burst`` at once; rate 0 or
    below means no limit."""

    rate: float
    burst: float = 1.0
    _tat: float = -math.inf  # the theoretical arrival time of the next message

    def reserve(self, now: float) -> float:
        """Book one slot; the seconds until it may be used (0: now)."""
        if self.rate <= 0:
            return 0.0
        interval = 1.0 / self.rate
        tat = max(self._tat, now)
        allowed_at = tat - (self.burst - 1.0) * interval
        self._tat = tat + interval
        return max(0.0, allowed_at - now)

    def cancel(self) -> None:
        """Give back the slot booked last (the message was not sent after all)."""
        if self.rate > 0:
            self._tat -= 1.0 / self.rate


@dataclass(slots=True)
class AdaptiveLimit:
    """Connections and message rate of a destination, halved when it throttles us and
    raised step by step once it has stopped (AIMD, as TCP does), never above the
    configured values.

    ``connections``: the configured maximum; ``rate``: the configured messages/s (0: no
    limit; then only connections adapt). After a throttling reply nothing is raised for
    ``recover_seconds``; then each further quiet ``recover_seconds`` adds one connection
    and a quarter of the rate back.
    """

    connections: int
    rate: float = 0.0
    recover_seconds: float = 30.0
    current_connections: int = field(init=False)
    current_rate: float = field(init=False)
    throttled_at: float = field(default=-math.inf, init=False)
    _raised_at: float = field(default=-math.inf, init=False)
    throttle_events: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if self.connections < 1:
            raise ValueError("connections must be at least 1")
        self.current_connections = self.connections
        self.current_rate = self.rate

    @property
    def limited(self) -> bool:
        return self.current_connections < self.connections or self.current_rate < self.rate

    def throttled(self, now: float) -> None:
        # One halving per burst of throttling replies: N connections all hearing 421 at
        # once is one signal, not N.
        if now - self.throttled_at < 1.0:
            return
        self.throttle_events += 1
        self.throttled_at = now
        self._raised_at = now
        self.current_connections = max(1, self.current_connections // 2)
        if self.rate > 0:
            self.current_rate = max(self.rate / 64, self.current_rate / 2)

    def tick(self, now: float) -> bool:
        """Raise the limits if the destination has been quiet long enough; True if raised."""
        if not self.limited or now - self._raised_at < self.recover_seconds:
            return False
        self._raised_at = now
        self.current_connections = min(self.connections, self.current_connections + 1)
        if self.rate > 0:
            self.current_rate = min(self.rate, self.current_rate + self.rate / 4)
        return True


__all__ = ["AdaptiveLimit", "RateLimiter", "is_throttling"]
