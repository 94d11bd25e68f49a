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


def event_id(now: float, random_bits: int) -> str:
    """``evt_`` + 26 lower-case hex digits: 48 bits of milliseconds, then 56 random bits.

    Ids sort roughly by creation time (for people reading them); the feed's
    order is the store's commit order, never the id. ``random_bits`` comes
    from the caller (``secrets.randbits(56)``), so this stays pure.
    """
    return f"evt_{int(now * 1000) & 0xFFFF_FFFF_FFFF:012x}{random_bits & (2**56 - 1):014x}"
