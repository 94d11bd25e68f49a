"""What the dashboard pages show, worked out from stored data: pure functions, no I/O.

A result's archive state in words, a task's timeline with each delivery's part
in it (changed the task, added details, a conflicting final report, nothing
new), and a service's status as readable rows (times as ISO 8601 with "in 5
min" / "5 min ago", durations in words) instead of raw JSON with epoch floats.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from server.core.types import Status, TaskState, iso_time

# -- results -------------------------------------------------------------------------


def http_url(url: Any) -> str | None:
    """``url`` when it is http(s), else None: a callback body must not plant javascript: links."""
    if isinstance(url, str) and urlsplit(url).scheme in ("http", "https"):
        return url
    return None


def is_sha256(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)


def result_view(result: Mapping[str, Any]) -> dict[str, Any]:
    """One result card: a local preview once archived, else its link and why it is not copied."""
    archived = result.get("archived") if isinstance(result.get("archived"), dict) else None
    sha = archived.get("sha256") if archived else None
    local = f"/dashboard/files/{sha}" if isinstance(sha, str) and is_sha256(sha) else None
    return {
        "kind": result.get("kind"),
        "url": result.get("url"),
        "link": http_url(result.get("url")),
        "local": local,
        "archived": archived,
        "archive_problem": archive_problem(result.get("archive_error")),
    }


def archive_problem(error: Any) -> str | None:
    """An ``archive_error`` in words: what failed, how often, and whether it is retried."""
    if error is None:
        return None
    if not isinstance(error, Mapping):
        return str(error)
    message = str(error.get("message") or "the copy failed")
    parts = [message]
    code = error.get("code")
    if code:
        parts[0] = f"{message} ({code})"
    attempts = error.get("attempts")
    if isinstance(attempts, int) and attempts > 0:
        parts.append(f"{attempts} attempt{'' if attempts == 1 else 's'}")
    if error.get("final") is True:
        parts.append("given up")
    elif error.get("final") is False:
        parts.append("will be retried")
    return " · ".join(parts)


# -- the timeline --------------------------------------------------------------------

#: What one delivery did to its task, as (CSS class, words).
CHANGED = ("changed", "changed the task")
DETAILS = ("details", "added details")
CONFLICT = ("conflict", "conflicting final report: recorded, not applied")
SAME = ("same", "no change")


def timeline(deliveries: Iterable[Mapping[str, Any]], state: TaskState) -> list[dict[str, Any]]:
    """Each delivery (oldest first) with what it did: ``effect`` and ``effect_text``.

    A delivery that changed a task already final with another final status (or
    one a recorded conflict names) is a conflict, not a change: the first final
    state stands. A change that did not move the status only added details.
    """
    conflicting = {c.status for c in state.conflicts}
    current: Status | None = None
    shown = []
    for delivery in deliveries:
        reported = _status(delivery.get("status"))
        if not delivery.get("changed") or reported is None:
            effect = SAME
        elif _applies(current, reported):
            effect, current = CHANGED, reported
        elif (
            current is not None
            and current.is_final
            and reported.is_final
            and (reported is not current or reported in conflicting)
        ):
            effect = CONFLICT
        else:
            effect = DETAILS
        shown.append({**delivery, "effect": effect[0], "effect_text": effect[1]})
    return shown


def _applies(current: Status | None, reported: Status) -> bool:
    if current is None:
        return True
    if current is Status.EXPIRED:
        return reported in (Status.SUCCEEDED, Status.FAILED)
    return reported.rank > current.rank


def _status(value: Any) -> Status | None:
    try:
        return Status(value)
    except ValueError:
        return None


# -- readable values -----------------------------------------------------------------

_TIME_KEY = re.compile(r"(^|_)(at|until|since|time)$")
_DURATION_KEY = re.compile(r"(^|_)(age|interval|seconds|duration|delay|grace|timeout)$")
_ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d(:\d\d(\.\d+)?)?(Z|[+-]\d\d:?\d\d)?$")
#: Unix times between 2001 and 2286: a number in this range under a time key is a moment.
_EPOCH_RANGE = (1e9, 1e10)


def duration(seconds: float) -> str:
    """``45 s``, ``5 min``, ``3 h 10 min``, ``2 d 4 h``."""
    seconds = abs(seconds)
    if seconds < 60:
        return f"{seconds:.0f} s" if seconds >= 1 or seconds == 0 else f"{seconds:.2g} s"
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def relative(ts: float, now: float) -> str:
    """``5 min ago`` / ``in 5 min`` / ``just now``."""
    delta = now - ts
    if abs(delta) < 1:
        return "just now"
    return f"{duration(delta)} ago" if delta > 0 else f"in {duration(delta)}"


def moment(ts: float, now: float) -> str:
    """``2026-11-22T10:00:00Z (5 min ago)``."""
    return f"{iso_time(ts)} ({relative(ts, now)})"


def readable(key: str, value: Any, now: float) -> str:
    """One status value in words: times and durations spelled out, the rest as is."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float) and value == value and abs(value) != float("inf"):
        if _TIME_KEY.search(key) and _EPOCH_RANGE[0] <= value <= _EPOCH_RANGE[1]:
            return moment(float(value), now)
        if _DURATION_KEY.search(key):
            return duration(float(value))
        return f"{value:g}" if isinstance(value, float) else str(value)
    if isinstance(value, str) and _TIME_KEY.search(key) and _ISO.match(value):
        ts = _parse_iso(value)
        return f"{value} ({relative(ts, now)})" if ts is not None else value
    if isinstance(value, list | tuple) and all(not isinstance(v, Mapping | list) for v in value):
        return ", ".join(readable(key, v, now) for v in value) or "—"
    return str(value)


def rows(status: Any, now: float, depth: int = 0) -> list[dict[str, Any]]:
    """A status dict as rows ``{label, text, depth}``; nested dicts become indented rows."""
    if not isinstance(status, Mapping):
        return [{"label": "status", "text": readable("status", status, now), "depth": depth}]
    found: list[dict[str, Any]] = []
    for key, value in status.items():
        label = str(key).replace("_", " ")
        if isinstance(value, Mapping) and value and depth < 4:
            found.append({"label": label, "text": "", "depth": depth})
            found.extend(rows(value, now, depth + 1))
        elif isinstance(value, Sequence) and not isinstance(value, str) and _has_mapping(value):
            found.append({"label": label, "text": f"{len(value)} entries", "depth": depth})
            for index, item in enumerate(value[:20]):
                found.append({"label": f"#{index + 1}", "text": "", "depth": depth + 1})
                found.extend(rows(item, now, depth + 2))
        else:
            found.append({"label": label, "text": readable(str(key), value, now), "depth": depth})
    return found


def _has_mapping(values: Sequence[Any]) -> bool:
    return any(isinstance(v, Mapping) for v in values)


def _parse_iso(text: str) -> float | None:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
