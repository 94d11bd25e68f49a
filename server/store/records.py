"""The records the store speaks in: what a write did, and what a read gives back.

Plain frozen dataclasses, with no behaviour beyond a derived answer; the
contract (``server.store.base.Store``) takes and returns them, and
``server.store`` exports them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ArchiveJob",
    "Delivery",
    "DueTask",
    "Event",
    "IngestOutcome",
    "Pruned",
    "QuarantineItem",
    "Registration",
    "SubmitRecord",
    "SubmitStart",
]


@dataclass(frozen=True)
class IngestOutcome:
    """What one ``Incoming`` did, read in the same transaction that applied it."""

    task_id: str
    provider: str
    status: str
    duplicate: bool  # byte-identical to a delivery already kept: nothing changed
    changed: bool  # the merged state changed
    became_final: bool
    archive_queued: int = 0  # archive rows this ingest added
    #: The status before this ingest (``pending`` for a task it created).
    previous: str = "pending"
    #: The task is held under another provider than the item named: nothing was
    #: merged, and the body went to quarantine (``quarantine_id``).
    mismatch: bool = False
    quarantine_id: int | None = None
    #: Ids of the events this ingest committed, in order.
    events: tuple[str, ...] = ()


@dataclass(frozen=True)
class Registration:
    """A task to expect (``POST /tasks``)."""

    provider: str
    task_id: str
    trace_id: str | None = None
    metadata: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class DueTask:
    """An unfinished task the reconciler should ask about."""

    task_id: str
    provider: str
    created_at: float
    checks: int


@dataclass(frozen=True)
class Delivery:
    """One distinct raw body kept for a task."""

    id: int
    source: str
    received_at: float
    sha256: str
    body: bytes
    #: The status the body reported (None: it said nothing about progress).
    status: str | None
    #: Whether merging it changed the task.
    changed: bool


@dataclass(frozen=True)
class QuarantineItem:
    """A delivery kept but not merged, with why."""

    id: int
    provider: str
    received_at: float
    reason: str
    message: str
    headers: Mapping[str, str]
    sha256: str
    body: bytes


@dataclass(frozen=True)
class ArchiveJob:
    """One result file to copy, as claimed by an archiver."""

    task_key: str
    url: str
    attempts: int  # failed attempts so far
    expires_at: float


@dataclass(frozen=True)
class Pruned:
    """What one ``Store.prune`` dropped."""

    bodies: int = 0
    bytes: int = 0
    quarantine_rows: int = 0
    quarantine_bytes: int = 0


@dataclass(frozen=True)
class Event:
    """One event of the outbox, as committed.

    ``body`` is the exact JSON text ``{"type", "timestamp", "data"}`` written
    in the transaction of the change; it never changes afterwards.
    """

    id: str
    type: str
    task_key: str
    provider: str
    created_at: float
    body: str


@dataclass(frozen=True)
class SubmitStart:
    """A ``POST /submit`` about to call upstream, as ``begin_submit`` records it.

    ``status``/``body`` is the answer the record gives if it is never
    finished (its process died during the call): the pessimistic one.
    """

    provider: str
    key: str | None  # the Idempotency-Key, if the client sent one
    fingerprint: str  # a digest of what was asked: the same key with another one is refused
    status: int
    body: str  # JSON text
    lapse_after: float  # seconds the call may take before the record counts as answered
    hold_for: float  # seconds the key stays held from now (until finish_submit says otherwise)
    forget_before: float  # records begun before this moment may be dropped


@dataclass(frozen=True)
class SubmitRecord:
    """One ``POST /submit`` as kept: what was asked, and the answer once there is one."""

    id: int
    provider: str
    key: str | None
    fingerprint: str
    #: False while the creation call is in flight (see ``lapses_at``).
    answered: bool
    #: The answer (HTTP status, JSON text); while in flight, the one given should it lapse.
    status: int
    body: str
    task_id: str | None
    trace_id: str | None
    created_at: float
    answered_at: float | None
    #: An unanswered record counts as answered with ``status``/``body`` from then on.
    lapses_at: float
    #: Until when ``key`` answers with this record (None: it holds no key).
    holds_key_until: float | None

    def settled(self, now: float) -> bool:
        """Answered, or lapsed (its call died with its process): ``status``/``body`` stand."""
        return self.answered or self.lapses_at <= now
