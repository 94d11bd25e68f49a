"""A log line that can repeat: said at once, then at most once per interval with a count.

For events that an attacker or an overload can produce thousands of times a
second (slow clients cut off, file descriptors exhausted): the log stays
readable and cannot fill the disk.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable


class Notice:
    """``say()`` logs now if ``interval`` passed since the last line, else counts for the next."""

    def __init__(
        self,
        logger: logging.Logger,
        message: str,
        *,
        level: int = logging.WARNING,
        interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger, self.message, self.level = logger, message, level
        self.interval, self.clock = interval, clock
        self._last: float | None = None
        self._held = 0

    def say(self, *args: object) -> bool:
        """Log the message (with ``args``) unless one went out within the interval.

        Returns True when it logged.
        """
        now = self.clock()
        if self._last is not None and now - self._last < self.interval:
            self._held += 1
            return False
        held, self._held, self._last = self._held, 0, now
        suffix = f" ({held} more since the last such line)" if held else ""
        self.logger.log(self.level, self.message + suffix, *args)
        return True
