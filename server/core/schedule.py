"""When to check a task next: exponential backoff with jitter, no I/O."""

from __future__ import annotations

import random

#: The longest wait between two checks of one unfinished task.
MAX_BACKOFF = 300.0
#: The first wait after a check that found nothing new.
FIRST_BACKOFF = 15.0


def backoff(checks: int, rng: random.Random | None = None) -> float:
    """Seconds to wait after the ``checks``-th check found the task unfinished.

    Doubles from FIRST_BACKOFF up to MAX_BACKOFF; "full jitter" on the upper
    half spreads tasks registered together so they do not poll in lockstep.
    """
    base = min(MAX_BACKOFF, FIRST_BACKOFF * 2.0 ** max(0, checks - 1))
    r = (rng or random).random()
    return base / 2 + r * base / 2


def first_check(now: float, grace: float) -> float:
    """A task registered or changed now is first polled after the grace period."""
    return now + grace
