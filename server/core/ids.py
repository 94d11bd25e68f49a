"""Task id matching.

Upstream spells one task id in several ways: AceData answers with the UUID,
Dreamina's ``data.task_id`` drops the dashes, and case is not guaranteed. The
key under which a task is stored is the id lower-cased without dashes, so that
every spelling finds the same row.
"""

from __future__ import annotations


def task_key(task_id: str) -> str:
    """The canonical key of a task id: trimmed, lower-cased, dashes removed."""
    return task_id.strip().lower().replace("-", "")


def same_task(a: str, b: str) -> bool:
    return task_key(a) == task_key(b)


_BASE32 = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford's alphabet, lower-cased


def event_id(now: float, random_bits: int) -> str:
    """``evt_`` + 26 lower-case base32 characters: 48 bits of milliseconds, 80 random bits.

    Ids sort roughly by creation time (for people reading them); the feed's
    order is the store's commit order, never the id. ``random_bits`` comes
    from the caller (``secrets.randbits(80)``), so this stays pure.
    """
    value = (int(now * 1000) & (2**48 - 1)) << 80 | (random_bits & (2**80 - 1))
    chars = []
    for _ in range(26):
        chars.append(_BASE32[value & 31])
        value >>= 5
    return "evt_" + "".join(reversed(chars))
