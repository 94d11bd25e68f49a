"""The archive: copy every result file of a succeeded task before its URL expires.

Work is rows in the database (``archives``), queued by ingest in the same
transaction that makes a task succeed, so a callback's answer never waits
for a download and nothing queued is lost in a crash. The ``Archiver`` claims
due rows (a claim is a lease in the database, so several processes never copy
the same row at once), copies them with bounded concurrency through
``download.download`` and records the outcome. A failure that a retry may fix
is tried again with exponential backoff until the URL expires.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from server.archive.download import HTTPStatusError, download, redact_url
from server.archive.egress import Resolver, archive_client
from server.archive.storage import ArchiveStorage, storage_for
from server.core.types import iso_time
from server.errors import ArchiveError
from server.observe.metrics import ARCHIVE_BYTES, ARCHIVE_FAILURES
from server.service import Inflight, cancel, holder_id
from server.settings import Settings
from server.store import ArchiveJob, Store

log = logging.getLogger("taskhook.archive")

#: Bound on one whole copy (2 GiB at ~1.2 MB/s); a stalled read fails sooner (READ_TIMEOUT).
FILE_TIMEOUT = 1800.0
READ_TIMEOUT = 60.0
#: Seconds a claim lasts unless renewed; the archiver renews its claims every third of
#: it while it copies, so the rows of a process that died are taken over this soon.
CLAIM_LEASE = 10.0
#: How often the archiver looks for due retries and rows queued by other processes.
POLL_INTERVAL = 5.0
RETRY_FIRST = 30.0
RETRY_MAX = 3600.0


def retry_delay(
    attempts: int, first: float = RETRY_FIRST, cap: float = RETRY_MAX, rng: Any = random
) -> float:
    """Seconds before the next try after ``attempts`` failures: doubling, jittered upper half."""
    base = min(cap, first * 2.0 ** max(0, attempts - 1))
    return base / 2 + float(rng.random()) * base / 2


def error_code(exc: ArchiveError) -> str:
    """The ``archive_error.code`` for a failed copy: ``http_403``, ``too_large``, ..."""
    if isinstance(exc, HTTPStatusError):
        return f"http_{exc.status_code}"
    return exc.reason


@dataclass(frozen=True)
class CopyOutcome:
    job: ArchiveJob
    sha256: str | None = None
    bytes: int = 0
    error: str | None = None
    message: str | None = None
    final: bool = True  # False: a retry is scheduled

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class RunSummary:
    """What one ``run_pending`` did (the CLI prints it)."""

    copied: int = 0
    bytes: int = 0
    failed: dict[str, int] = field(default_factory=dict)

    @property
    def failures(self) -> int:
        return sum(self.failed.values())

    def add(self, outcome: CopyOutcome) -> None:
        if outcome.ok:
            self.copied += 1
            self.bytes += outcome.bytes
        else:
            assert outcome.error is not None
            self.failed[outcome.error] = self.failed.get(outcome.error, 0) + 1


class Archiver:
    """Copies queued result files into the archive's storage; a service of the web process.

    It does not know which storage that is (a folder or a bucket): it hands
    each download to ``storage.put`` and records the outcome.
    """

    name = "archive"

    def __init__(
        self,
        settings: Settings,
        store: Store,
        *,
        http: httpx.AsyncClient | None = None,
        poll_interval: float = POLL_INTERVAL,
        file_timeout: float = FILE_TIMEOUT,
        retry_first: float = RETRY_FIRST,
        retry_max: float = RETRY_MAX,
        resolve: Resolver | None = None,
        clock: Callable[[], float] = time.time,
        storage: ArchiveStorage | None = None,
    ) -> None:
        self.settings, self.store = settings, store
        self.storage = storage if storage is not None else storage_for(settings)
        self._own_storage = storage is None
        self.holder = holder_id()
        self.slots = settings.archive_concurrency
        self.poll_interval, self.file_timeout = poll_interval, file_timeout
        self.retry_first, self.retry_max = retry_first, retry_max
        self.lease = CLAIM_LEASE
        self._keeper: asyncio.Task[None] | None = None
        self._resolve, self._clock = resolve, clock
        self._http, self._own_http = http, http is None
        self._inflight: Inflight[CopyOutcome] = Inflight(
            log, "archive copy crashed", lambda: self.store.notify_work("archive")
        )
        self._loop: asyncio.Task[None] | None = None
        self._stopping = False

    # -- lifecycle ----------------------------------------------------------

    async def open(self, *, cleanup: bool) -> None:
        """Open the storage; ``cleanup`` removes what a crash's copies left there first.

        Only a starting server cleans up: a one-off command could delete a
        running server's partial copy. ``StorageError`` if the storage cannot
        be prepared at all.
        """
        await self.storage.open(cleanup=cleanup)
        if self._http is None:
            self._http = archive_client(
                allow_private=self.settings.archive_allow_private,
                timeout=httpx.Timeout(READ_TIMEOUT, connect=15.0),
                limits=httpx.Limits(max_connections=max(10, self.slots * 2)),
                resolve=self._resolve,
            )

    async def start(self) -> asyncio.Task[None]:
        """Open, then run in the background (claims of a dead process lapse into ours)."""
        await self.open(cleanup=True)
        self._keeper = asyncio.create_task(self._keep_claims(), name="archive claims")
        self._loop = asyncio.create_task(self._run(), name="archiver")
        return self._loop

    async def stop(self) -> None:
        """Cancel in-flight copies (their partial files go) and give their rows back."""
        self._stopping = True
        await cancel(self._loop, self._keeper)
        await self._inflight.cancel()
        try:
            await self.store.release_archives(self.holder)
        except Exception:  # the store may be gone already; the lease lapses by itself
            log.warning("archive could not give back its claims; they lapse later", exc_info=True)
        await self.close()

    async def close(self) -> None:
        if self._own_http and self._http is not None:
            await self._http.aclose()
            self._http = None
        if self._own_storage:
            await self.storage.close()

    async def status(self) -> dict[str, Any]:
        counts = await self.store.archive_counts()
        body: dict[str, Any] = {
            "ok": True,
            "pending": counts.get("pending", 0),
            "running": counts.get("running", 0),
            "failed": counts.get("failed", 0),
            "done": counts.get("done", 0),
            "in_flight": len(self._inflight),
            "storage": self.storage.location,
        }
        # A live probe, not the last StorageError: the disk may have been freed since.
        problem = await self.storage.status()
        if problem is None and self._loop is not None and self._loop.done() and not self._stopping:
            problem = "the archive loop stopped; see the logs"
        if problem is not None:
            body.update(ok=False, reason=problem)
        return body

    # -- the background loop ------------------------------------------------

    async def _run(self) -> None:
        if problem := await self.storage.status():
            log.error("archive: %s", problem)
        while not self._stopping:
            mark = self.store.work_mark("archive")  # before claiming: no signal is missed
            try:
                await self._fill_slots()
            except Exception:  # a store hiccup must not end the loop; the next poll retries
                log.exception("archive could not claim work")
            await self.store.wait_for_work("archive", self.poll_interval, after=mark)

    async def _keep_claims(self) -> None:
        """Renew this process's claims while it lives, so only a dead holder's claims lapse."""
        while True:
            await asyncio.sleep(self.lease / 3)
            if self._loop is not None and not self._inflight:
                continue  # the service copies nothing now: no claim to keep
            try:
                await self.store.renew_archive_claims(self.holder, self.lease)
            except Exception:  # the next renewal retries; the claims last a while yet
                log.warning("archive could not renew its claims", exc_info=True)

    async def _fill_slots(self) -> None:
        free = self.slots - len(self._inflight)
        if free <= 0 or self._stopping:
            return
        for job in await self.store.claim_archives(self.holder, free, self.lease):
            self._inflight.spawn(self.copy(job), f"archive {redact_url(job.url)}")

    # -- one copy -----------------------------------------------------------

    async def copy(self, job: ArchiveJob) -> CopyOutcome:
        """Copy one claimed row's file and record the outcome."""
        assert self._http is not None, "call open() or start() first"
        try:
            got = await download(
                job.url,
                self.storage,
                http=self._http,
                max_bytes=min(self.settings.archive_max_bytes, self.storage.max_file_bytes),
                timeout=self.file_timeout,
            )
        except ArchiveError as exc:  # the origin's failures and the storage's
            return await self._record_failure(job, exc)
        await self.store.finish_archive(job, self.holder, got.sha256, got.bytes, got.content_type)
        ARCHIVE_BYTES.inc(got.bytes)
        log.info(
            "archived task=%s url=%s sha256=%s bytes=%d",
            job.task_key,
            redact_url(job.url),
            got.sha256,
            got.bytes,
        )
        return CopyOutcome(job, got.sha256, got.bytes)

    async def _record_failure(self, job: ArchiveJob, exc: ArchiveError) -> CopyOutcome:
        now = self._clock()
        code, message = error_code(exc), exc.message
        retry_at: float | None = None
        if now >= job.expires_at and (not exc.permanent or code in ("http_403", "http_404")):
            code = "expired"
            message = f"the URL expired at {iso_time(job.expires_at)}; last attempt: {message}"
        elif not exc.permanent:
            delay = retry_delay(job.attempts + 1, self.retry_first, self.retry_max)
            retry_at = min(now + delay, job.expires_at)
        ARCHIVE_FAILURES.labels(code).inc()
        await self.store.fail_archive(job, self.holder, code, message, retry_at)
        log.warning(
            "archive failed task=%s code=%s retry_at=%s: %s",
            job.task_key,
            code,
            iso_time(retry_at),
            message,
        )
        return CopyOutcome(job, error=code, message=message, final=retry_at is None)

    # -- one-off runs (the CLI) ---------------------------------------------

    async def run_pending(
        self,
        *,
        include_failed: bool = False,
        report: Callable[[CopyOutcome], Awaitable[None] | None] | None = None,
    ) -> RunSummary:
        """Copy every queued file now, each at most once, ignoring retry schedules.

        Rows another live process is copying are left to it.
        """
        await self.store.enqueue_missing_archives()
        due_by = await self.store.reschedule_archives(include_failed)
        summary = RunSummary()

        async def worker() -> None:
            while jobs := await self.store.claim_archives(self.holder, 1, self.lease, due_by):
                outcome = await self.copy(jobs[0])
                summary.add(outcome)
                if report is not None and (pending := report(outcome)) is not None:
                    await pending

        keeper = asyncio.create_task(self._keep_claims(), name="archive claims")
        try:
            await asyncio.gather(*(worker() for _ in range(self.slots)))
        finally:
            await cancel(keeper)
        return summary
