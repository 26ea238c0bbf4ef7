"""When a deferred recipient is tried again, and when it fails for good."""

from __future__ import annotations

import random
from collections.abc import Sequence


def next_attempt(
    attempts_made: int, schedule: Sequence[int], now: float, rng: random.Random | None = None
) -> float | None:
    """The time of the next try after ``attempts_made`` attempts (the one that just
    failed included), or None when the schedule is used up. ±10 % jitter spreads retries
    of a throttled batch so they do not return as one burst."""
    if attempts_made > len(schedule):
        return None
    delay = schedule[attempts_made - 1]
    jitter = (rng or random).uniform(0.9, 1.1)
    return now + delay * jitter
