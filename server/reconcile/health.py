"""Whether the reconciler may call a provider now, and why not.

One ``ProviderHealth`` per provider remembers the last trouble upstream
reported: a 429 pauses the provider for its ``Retry-After``; 5xx, timeouts
and refused connections back it off with a doubling delay; a rejected token
pauses it with a probe delay that starts at one minute and doubles, so a
wrong token costs one call per probe, not one per pass. Every pause, whatever
asked for it (a ``Retry-After: 1e12`` included), ends within ``MAX_PAUSE``.
Any successful call clears the trouble. No I/O here: time is passed in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from server.core.types import iso_time
from server.providers import NAMES

#: No pause lasts longer than this (seconds), whatever upstream asked for.
MAX_PAUSE = 3600.0


@dataclass(frozen=True)
class PauseRules:
    """How long a provider is left alone after each kind of trouble (seconds)."""

    rate_limit_default: float = 30.0  # a 429 without Retry-After
    failure_first: float = 30.0  # first back-off after a 5xx, timeout, connection error
    failure_max: float = 600.0
    auth_first: float = 60.0  # first probe after a rejected token
    auth_max: float = 3600.0

    @classmethod
    def for_interval(cls, interval: float) -> PauseRules:
        """Failure back-off starts at one reconcile interval (never below a second)."""
        first = max(1.0, interval)
        return cls(rate_limit_default=first, failure_first=first)


@dataclass
class ProviderHealth:
    provider: str
    rules: PauseRules = field(default_factory=PauseRules)
    paused_until: float = 0.0
    #: ``rate_limited``, ``failing`` or ``unauthorized`` while troubled; None when fine.
    trouble: str | None = None
    reason: str | None = None
    failures: int = 0
    auth_delay: float = 0.0
    last_ok_at: float | None = None

    def may_call(self, now: float) -> bool:
        return now >= self.paused_until

    def succeeded(self, now: float) -> None:
        self.trouble, self.reason, self.failures, self.auth_delay = None, None, 0, 0.0
        self.paused_until, self.last_ok_at = 0.0, now

    def rate_limited(self, now: float, retry_after: float | None, detail: str) -> None:
        wait = retry_after if retry_after is not None else self.rules.rate_limit_default
        self.trouble, self.reason = "rate_limited", detail
        self._pause(now, wait)

    def failed(self, now: float, detail: str) -> None:
        self.failures += 1
        # The exponent is bounded too: 2 ** 2000 is a float overflow.
        doublings = min(self.failures - 1, 64)
        wait = min(self.rules.failure_max, self.rules.failure_first * 2.0**doublings)
        self.trouble, self.reason = "failing", detail
        self._pause(now, wait)

    def unauthorized(self, now: float, detail: str) -> None:
        if self.auth_delay:
            self.auth_delay = min(self.rules.auth_max, MAX_PAUSE, self.auth_delay * 2)
        else:
            self.auth_delay = min(self.rules.auth_first, MAX_PAUSE)
        self.trouble, self.reason = "unauthorized", detail
        self._pause(now, self.auth_delay)

    def _pause(self, now: float, wait: float) -> None:
        """Pause until ``now + wait``, the wait clamped to 0..MAX_PAUSE (NaN: the cap)."""
        if math.isnan(wait):
            wait = MAX_PAUSE
        self.paused_until = now + min(max(wait, 0.0), MAX_PAUSE)

    def to_json(self, now: float) -> dict[str, Any]:
        body: dict[str, Any] = {"state": self.trouble or "ok"}
        if self.trouble:
            body["reason"] = self.reason
            body["paused_until"] = iso_time(self.paused_until)
            body["paused_for"] = round(max(0.0, self.paused_until - now), 3)
        if self.last_ok_at is not None:
            body["last_ok_at"] = iso_time(self.last_ok_at)
        return body


class HealthBoard:
    """The health of every provider the reconciler may call."""

    def __init__(self, rules: PauseRules | None = None) -> None:
        self.rules = rules or PauseRules()
        self.providers = {p: ProviderHealth(p, self.rules) for p in NAMES}

    def __getitem__(self, provider: str) -> ProviderHealth:
        return self.providers[provider]

    def to_json(self, now: float) -> dict[str, Any]:
        return {p: h.to_json(now) for p, h in self.providers.items()}
