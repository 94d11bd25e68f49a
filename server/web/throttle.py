"""The dashboard sign-in throttle: wrong tokens from one address make it wait, longer each time.

After ``FREE_TRIES`` wrong sign-ins from one client address, that address is
locked: every attempt while it is locked is answered 429 without looking at the
token, counts as another failure, and doubles the wait (from ``FIRST_WAIT``
seconds up to ``MAX_WAIT``); that doubled wait is the ``Retry-After`` it is
told. A right token once the lock has passed clears the address.

The count lives in this process (each worker counts its own tries) and holds at
most ``MAX_ADDRESSES`` addresses, the least recently seen dropped first. The
address is the one uvicorn reports: behind a proxy, set ``FORWARDED_ALLOW_IPS``
to the proxy's address so that each client is counted, not the proxy.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

FREE_TRIES = 5
FIRST_WAIT = 15.0
MAX_WAIT = 3600.0
MAX_ADDRESSES = 10_000
#: An address quiet for this long starts again from zero.
FORGET_AFTER = 24 * 3600.0


@dataclass
class _Tries:
    failures: int = 0
    locked_until: float = 0.0
    last_seen: float = 0.0


class SignInThrottle:
    """Counts wrong sign-ins per address; ``clock`` is injectable for tests."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._tries: OrderedDict[str, _Tries] = OrderedDict()
        self._lock = threading.Lock()

    def wait(self, address: str) -> int:
        """Seconds ``address`` must wait before it may try (0: it may try now).

        A try while locked counts as a failure, so its wait grows.
        """
        now = self.clock()
        with self._lock:
            tries = self._get(address, now)
            if tries.locked_until <= now:
                return 0
            self._fail(tries, now)
            return math.ceil(tries.locked_until - now)

    def failed(self, address: str) -> None:
        """Record a wrong token from ``address``."""
        now = self.clock()
        with self._lock:
            self._fail(self._get(address, now), now)

    def succeeded(self, address: str) -> None:
        with self._lock:
            self._tries.pop(address, None)

    def _get(self, address: str, now: float) -> _Tries:
        tries = self._tries.get(address)
        if tries is None or now - tries.last_seen > FORGET_AFTER:
            tries = _Tries()
            self._tries[address] = tries
        self._tries.move_to_end(address)
        tries.last_seen = now
        while len(self._tries) > MAX_ADDRESSES:
            self._tries.popitem(last=False)
        return tries

    @staticmethod
    def _fail(tries: _Tries, now: float) -> None:
        tries.failures += 1
        if tries.failures >= FREE_TRIES:
            wait = min(MAX_WAIT, FIRST_WAIT * 2 ** min(tries.failures - FREE_TRIES, 20))
            tries.locked_until = now + wait
