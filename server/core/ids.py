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
