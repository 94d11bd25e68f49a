"""Exclusive holds that lapse, in the store contract: leases and archive claims.

``ClaimStore`` states them; ``server.store.base.Store`` inherits it, so every
backend implements these methods. Their guarantees ("claims are exclusive and
lapse", "leases carry a term") are listed with the others in
``server.store.base``; each method says exactly what it promises.
"""

from __future__ import annotations

import abc

from server.store.records import ArchiveJob


class ClaimStore(abc.ABC):
    """Leases (one holder of a named role) and the archive queue's claims."""

    # -- leases ------------------------------------------------------------------------

    @abc.abstractmethod
    async def take_lease(self, name: str, holder: str, ttl: float) -> int | None:
        """Take the lease ``name`` for ``ttl`` seconds; its term, or None if another holds it.

        Free or lapsed: ``holder`` gets it with a new, higher term. Held by
        ``holder`` and not lapsed: extended, same term. Held by someone else
        and not lapsed: None.
        """

    @abc.abstractmethod
    async def renew_lease(self, name: str, holder: str, term: int, ttl: float) -> bool:
        """Extend the lease by ``ttl`` if ``holder`` still holds ``term`` and it has not lapsed.

        False means the lease is lost (lapsed, or another holder took a newer
        term): stop the work it guarded at once. A stale holder can never renew.
        """

    @abc.abstractmethod
    async def release_lease(self, name: str, holder: str) -> None:
        """Give the lease up if ``holder`` holds it (on shutdown), so another takes it at once."""

    # -- the archive queue -------------------------------------------------------------

    @abc.abstractmethod
    async def enqueue_missing_archives(self) -> int:
        """Queue every result of every succeeded task that has no archive row; how many."""

    @abc.abstractmethod
    async def claim_archives(
        self, holder: str, limit: int, lease: float, due_by: float | None = None
    ) -> list[ArchiveJob]:
        """Claim up to ``limit`` rows due by ``due_by`` (default now) for ``lease`` seconds.

        Exclusive: a row is claimed by one holder at a time, across processes
        and hosts. A row whose claim lapsed (its holder died or stopped
        renewing) is claimable again.
        """

    @abc.abstractmethod
    async def renew_archive_claims(self, holder: str, lease: float) -> int:
        """Extend every claim ``holder`` has by ``lease`` seconds from now; how many."""

    @abc.abstractmethod
    async def reschedule_archives(self, include_failed: bool = False) -> float:
        """Make every pending row (and failed ones, if asked) due now; returns that moment."""

    @abc.abstractmethod
    async def finish_archive(
        self, job: ArchiveJob, holder: str, sha256: str, size: int, content_type: str
    ) -> None:
        """Record a copy (only while ``holder`` still holds the claim).

        When this settles the task's last copy (every result copied or failed
        for good), the ``task.archived`` event is committed with it.
        """

    @abc.abstractmethod
    async def fail_archive(
        self, job: ArchiveJob, holder: str, error: str, message: str, retry_at: float | None
    ) -> None:
        """Record a failed attempt: pending again at ``retry_at``, or failed for good (None).

        Only while ``holder`` still holds the claim; a final failure that
        settles the task's last copy commits ``task.archived`` with it.
        """

    @abc.abstractmethod
    async def release_archives(self, holder: str) -> int:
        """Give back every row ``holder`` is running (on shutdown); how many."""

    @abc.abstractmethod
    async def archive_counts(self) -> dict[str, int]:
        """Archive rows by status."""

    @abc.abstractmethod
    async def archived_file(self, sha256: str) -> tuple[str, int] | None:
        """``(content_type, bytes)`` of a copy with that digest, or None."""
