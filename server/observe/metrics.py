"""Every Prometheus metric taskhook exports, defined once.

Counters live in this process's registry. ``/metrics`` adds gauges read from
the database at scrape time (tasks by status), so they are right whichever
worker answers the scrape.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from server.core.types import Status

if TYPE_CHECKING:
    from server.store import Store

REGISTRY = CollectorRegistry(auto_describe=True)


def _register_storage() -> None:
    from server.observe.storage import StorageCollector

    REGISTRY.register(StorageCollector())


CALLBACKS = Counter(
    "taskhook_callbacks_received",
    "Callbacks received, by provider and outcome (accepted, duplicate, unauthorized, "
    "quarantined, too_large, unknown_provider, provider_mismatch).",
    ["provider", "outcome"],
    registry=REGISTRY,
)
QUARANTINED = Counter(
    "taskhook_deliveries_quarantined",
    "Deliveries kept in quarantine instead of merged, by provider and reason.",
    ["provider", "reason"],
    registry=REGISTRY,
)
UPSTREAM_CALLS = Counter(
    "taskhook_upstream_calls",
    "Calls to the providers' tasks endpoints, by provider and outcome "
    "(ok, not_yet, unauthorized, rate_limited, server_error, timeout, error).",
    ["provider", "outcome"],
    registry=REGISTRY,
)
SUBMITS = Counter(
    "taskhook_submits",
    "POST /submit requests, by provider and outcome (created, replayed, rejected, "
    "rate_limited, failed, unknown, in_progress, key_reused, not_configured).",
    ["provider", "outcome"],
    registry=REGISTRY,
)
UNKNOWN_STATUS_WORDS = Counter(
    "taskhook_unknown_status_words",
    "Payloads whose status word taskhook does not know (the status was left unchanged), "
    "by provider and word (normalised; past 100 distinct words per provider: _other).",
    ["provider", "word"],
    registry=REGISTRY,
)
GAPS_FILLED = Counter(
    "taskhook_gaps_filled",
    "Tasks whose final state came from the reconciler, not from a callback.",
    ["provider"],
    registry=REGISTRY,
)
RECONCILE_PASS_SECONDS = Histogram(
    "taskhook_reconcile_pass_seconds",
    "Duration of one reconcile pass.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
    registry=REGISTRY,
)
ARCHIVE_BYTES = Counter(
    "taskhook_archive_bytes", "Bytes of result files archived.", registry=REGISTRY
)
ARCHIVE_FAILURES = Counter(
    "taskhook_archive_failures",
    "Result file copies that failed, by reason.",
    ["reason"],
    registry=REGISTRY,
)
HTTP_REFUSED = Counter(
    "taskhook_http_refused",
    "Connections or requests refused to protect the server, by reason: header_timeout, "
    "body_timeout (a client too slow), overloaded (LIMIT_CONCURRENCY), no_file_descriptors.",
    ["reason"],
    registry=REGISTRY,
)
WRITE_BATCH_SIZE = Histogram(
    "taskhook_write_batch_size",
    "Writes committed together in one transaction (group commit); on SQLite the callbacks "
    "of one event-loop turn are one write.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
    registry=REGISTRY,
)
COMMIT_SECONDS = Histogram(
    "taskhook_commit_seconds",
    "Time from BEGIN to COMMIT of one write group, fsync included.",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
    registry=REGISTRY,
)
WEBHOOK_ATTEMPTS = Counter(
    "taskhook_webhook_attempts",
    "Webhook attempts, by endpoint id and outcome (delivered, retrying, failed).",
    ["endpoint", "outcome"],
    registry=REGISTRY,
)
WEBHOOK_LATENCY = Histogram(
    "taskhook_webhook_delivery_seconds",
    "Time from an event's commit to the 2xx answer that delivered it to an endpoint.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 7200, 86400),
    registry=REGISTRY,
)
WEBHOOK_DISABLED = Counter(
    "taskhook_webhook_endpoints_disabled",
    "Endpoints this process disabled, by reason (gone: answered 410; failing: every attempt "
    "failed for DELIVERY_DISABLE_AFTER).",
    ["reason"],
    registry=REGISTRY,
)


def observe_commit(size: int, seconds: float) -> None:
    """The writer's ``on_commit`` hook (runs on the writer thread; prometheus is thread-safe)."""
    WRITE_BATCH_SIZE.observe(size)
    COMMIT_SECONDS.observe(seconds)


# -- read from the database at scrape time -------------------------------------

TASKS = Gauge(
    "taskhook_tasks",
    "Tasks by merged status, read from the database at scrape (the same from every worker).",
    ["status"],
    registry=REGISTRY,
)
OLDEST_UNFINISHED = Gauge(
    "taskhook_oldest_unfinished_task_age_seconds",
    "Age of the oldest task not yet final (0 when none); read from the database at scrape.",
    registry=REGISTRY,
)
UNFINISHED = Gauge(
    "taskhook_unfinished_tasks",
    "Tasks not yet final (pending, queued, running); read from the database at scrape.",
    registry=REGISTRY,
)
WEBHOOK_PENDING = Gauge(
    "taskhook_webhook_pending",
    "Events not yet delivered to an endpoint (nor failed for good), by endpoint id; read from "
    "the database at scrape.",
    ["endpoint"],
    registry=REGISTRY,
)
WEBHOOK_OLDEST = Gauge(
    "taskhook_webhook_oldest_undelivered_age_seconds",
    "Age (since its commit) of the oldest event not yet delivered to an endpoint, by endpoint "
    "id (0 when none); read from the database at scrape.",
    ["endpoint"],
    registry=REGISTRY,
)
WEBHOOK_ENDPOINT_DISABLED = Gauge(
    "taskhook_webhook_endpoint_disabled",
    "1 for an endpoint that is disabled (it gets no events until re-enabled), else 0; read "
    "from the database at scrape.",
    ["endpoint"],
    registry=REGISTRY,
)

#: Scrapes and dashboard views within this many seconds share one database read.
SNAPSHOT_MAX_AGE = 5.0


class TaskSnapshot:
    """Task counts read from one store, at most once per ``SNAPSHOT_MAX_AGE`` seconds."""

    def __init__(self, counts: dict[str, int], unfinished: int, oldest_created: float | None):
        self.taken_at = time.monotonic()
        self.counts = {s.value: counts.get(s.value, 0) for s in Status}
        self.unfinished = unfinished
        self.oldest_created = oldest_created

    @property
    def total(self) -> int:
        return sum(self.counts.values())


_snapshots: weakref.WeakKeyDictionary[Store, TaskSnapshot] = weakref.WeakKeyDictionary()
_locks: weakref.WeakKeyDictionary[Store, asyncio.Lock] = weakref.WeakKeyDictionary()


async def task_snapshot(store: Store, max_age: float = SNAPSHOT_MAX_AGE) -> TaskSnapshot:
    """Counts by status, cached briefly: a burst of scrapes costs one GROUP BY."""
    lock = _locks.setdefault(store, asyncio.Lock())
    async with lock:
        cached = _snapshots.get(store)
        if cached is not None and time.monotonic() - cached.taken_at < max_age:
            return cached
        counts = await store.count_by_status()
        unfinished, oldest = await store.unfinished_summary()
        snapshot = TaskSnapshot(counts, unfinished, oldest)
        _snapshots[store] = snapshot
        return snapshot


async def exposition(store: Store) -> bytes:
    """The Prometheus text for this process, database gauges refreshed first."""
    from server.observe import storage

    await storage.refresh(store)
    snapshot = await task_snapshot(store)
    for status, count in snapshot.counts.items():
        TASKS.labels(status).set(count)
    UNFINISHED.set(snapshot.unfinished)
    oldest = snapshot.oldest_created
    OLDEST_UNFINISHED.set(max(0.0, time.time() - oldest) if oldest is not None else 0)
    await _webhook_gauges(store)
    return generate_latest(REGISTRY)


async def _webhook_gauges(store: Store) -> None:
    """Per-endpoint gauges, rebuilt at each scrape so a removed endpoint's series go."""
    backlog = await store.webhook_backlog()
    now = time.time()
    for gauge in (WEBHOOK_PENDING, WEBHOOK_OLDEST, WEBHOOK_ENDPOINT_DISABLED):
        gauge.clear()
    for row in backlog:
        WEBHOOK_PENDING.labels(row.endpoint_id).set(row.pending)
        oldest = row.oldest_pending
        WEBHOOK_OLDEST.labels(row.endpoint_id).set(max(0.0, now - oldest) if oldest else 0)
        WEBHOOK_ENDPOINT_DISABLED.labels(row.endpoint_id).set(int(row.disabled_at is not None))


_register_storage()
