"""The shared vocabulary: statuses, observations and the merged task state.

Every other module imports from here; this module imports nothing of ours, so
it can be read first and on its own.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

#: Where a raw delivery came from.
Source = Literal["callback", "reconcile", "replay", "submit"]


class Status(enum.StrEnum):
    """The normalised status of a task, the same for every provider."""

    PENDING = "pending"  # registered, nothing heard yet
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    EXPIRED = "expired"  # we gave up waiting; a real result still wins later

    @property
    def rank(self) -> int:
        """Statuses only move up this order; all final statuses share the top rank."""
        return _RANK[self]

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATUSES


_RANK = {
    Status.PENDING: 0,
    Status.QUEUED: 1,
    Status.RUNNING: 2,
    Status.SUCCEEDED: 3,
    Status.FAILED: 3,
    Status.EXPIRED: 3,
}
FINAL_STATUSES = frozenset({Status.SUCCEEDED, Status.FAILED, Status.EXPIRED})


@dataclass(frozen=True)
class Result:
    """One result file of a task.

    ``extra`` holds whatever else the payload says about the file (prompt, size,
    last_frame_url, resolution, duration, original_result_url, ...).
    """

    url: str
    kind: Literal["image", "video"]
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"url": self.url, "kind": self.kind, **dict(self.extra)}


@dataclass(frozen=True)
class ErrorInfo:
    """An error reported by upstream for a task (not a transport error)."""

    code: str | None
    message: str

    def to_json(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message}


@dataclass(frozen=True)
class Observation:
    """What one payload (callback or tasks-endpoint answer) says about one task.

    ``status`` is None when the payload says nothing about progress: ``{}``, a
    missing item, ``success`` without a result, or a transient
    ``success: false`` without an error code. Such an observation is *empty*:
    merging it changes nothing but bookkeeping.
    """

    provider: str
    task_id: str | None
    status: Status | None = None
    upstream_status: str | None = None
    trace_id: str | None = None
    results: tuple[Result, ...] = ()
    error: ErrorInfo | None = None
    #: ``success: false`` without an error code: a hiccup upstream, not final.
    transient: bool = False
    #: Upstream timestamps and progress as given (submit_time, finish_time, progress, ...).
    upstream: Mapping[str, Any] = field(default_factory=dict)

    @property
    def is_empty(self) -> bool:
        return self.status is None


@dataclass(frozen=True)
class Conflict:
    """A final observation that disagreed with the final state already held."""

    status: Status
    upstream_status: str | None
    error: ErrorInfo | None
    results: tuple[Result, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status.value,
            "upstream_status": self.upstream_status,
            "error": self.error.to_json() if self.error else None,
            "results": [r.to_json() for r in self.results],
        }


@dataclass(frozen=True)
class TaskState:
    """The merged outcome of every observation of one task.

    Only what observations decide lives here; bookkeeping (timestamps, counts,
    next check) belongs to the store, so that ``merge`` stays a pure function
    of outcome and observation.
    """

    task_id: str
    provider: str
    status: Status = Status.PENDING
    upstream_status: str | None = None
    trace_id: str | None = None
    results: tuple[Result, ...] = ()
    error: ErrorInfo | None = None
    conflicts: tuple[Conflict, ...] = ()
    #: Upstream timestamps and progress, first value seen for each key wins.
    upstream: Mapping[str, Any] = field(default_factory=dict)

    @property
    def is_final(self) -> bool:
        return self.status.is_final


def iso_time(ts: float | None) -> str | None:
    """Unix seconds -> ``2026-11-22T10:00:00Z`` (milliseconds when present).

    The last time rendered is remembered: a change renders the same instant
    several times (the task's created, updated and completed times and each
    event's timestamp are often one ``now``).
    """
    global _last_iso
    if ts is None:
        return None
    last = _last_iso  # one tuple: another thread never sees a time with another's text
    if last[0] == ts:
        return last[1]
    moment = datetime.fromtimestamp(ts, tz=UTC)
    text = moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    text = text.replace(".000Z", "Z")
    _last_iso = (ts, text)
    return text


_last_iso: tuple[float, str] = (float("nan"), "")


@dataclass(frozen=True)
class ArchiveOutcome:
    """Where the archive copy of one result file stands, as the store records it.

    ``status``: ``pending`` (queued or retrying), ``running`` (being copied),
    ``done`` (copied: ``sha256``, ``bytes``, ``content_type``) or ``failed``
    (for good). ``error``/``message``/``attempts`` keep the last failure, also
    while a retry is pending.
    """

    status: str
    sha256: str | None = None
    bytes: int | None = None
    content_type: str | None = None
    error: str | None = None
    message: str | None = None
    attempts: int = 0

    @property
    def settled(self) -> bool:
        """Copied, or failed for good: nothing more will happen to it by itself."""
        return self.status in ("done", "failed")


@dataclass(frozen=True)
class TaskRecord:
    """A task as stored: its merged state plus the store's bookkeeping.

    ``server.core.render.task_json`` turns it into the API's JSON.
    """

    state: TaskState
    metadata: Mapping[str, Any]
    created_at: float
    updated_at: float
    completed_at: float | None = None
    deliveries: int = 0
    checks: int = 0
    next_check_at: float | None = None
    last_source: str | None = None
    #: The archive copy per result URL, for the results that have an outcome to show
    #: (copied, or a failed attempt); a result still waiting for its first try is absent.
    archives: Mapping[str, ArchiveOutcome] = field(default_factory=dict)
