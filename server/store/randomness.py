"""Random bits for event ids, read from the operating system in bulk.

``secrets.randbits`` is one system call per id (which also hands the
interpreter lock to another thread); a change makes one or two events, and a
bulk settle hundreds. ``RandomBits`` reads many ids' worth in one call and
deals them out, under a lock, so two threads never get the same bits.
"""

from __future__ import annotations

import secrets
import threading


class RandomBits:
    """A callable like ``secrets.randbits``, refilled ``ids`` draws at a time."""

    def __init__(self, ids: int = 256, *, max_bits: int = 64) -> None:
        self._refill = max(1, ids) * -(-max_bits // 8)
        self._max_bits = max_bits
        self._pool = b""
        self._lock = threading.Lock()

    def __call__(self, bits: int) -> int:
        if not 0 < bits <= self._max_bits:
            raise ValueError(f"between 1 and {self._max_bits} bits, not {bits}")
        width = -(-bits // 8)
        with self._lock:
            if len(self._pool) < width:
                self._pool = secrets.token_bytes(self._refill)
            drawn, self._pool = self._pool[:width], self._pool[width:]
        return int.from_bytes(drawn, "big") >> (width * 8 - bits)


#: The process's pool, shared by both backends' event writers.
randbits = RandomBits()
