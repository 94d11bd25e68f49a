"""Every Prometheus metric taskhook exports, defined once.

Counters live in this process's registry. ``/metrics`` adds gauges read from
the database at scrape time (tasks by status), so they are right whichever
worker answers the scrape.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

CALLBACKS = Counter(
    "taskhook_callbacks_received",
    "Callbacks received, by provider and outcome (accepted, duplicate, unauthorized, "
    "quarantined, too_large, unknown_provider).",
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
WRITE_BATCH_SIZE = Histogram(
    "taskhook_write_batch_size",
    "Writes committed together in one transaction (group commit).",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
    registry=REGISTRY,
)
COMMIT_SECONDS = Histogram(
    "taskhook_commit_seconds",
    "Time from BEGIN to COMMIT of one write group, fsync included.",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
    registry=REGISTRY,
)


def observe_commit(size: int, seconds: float) -> None:
    """The writer's ``on_commit`` hook (runs on the writer thread; prometheus is thread-safe)."""
    WRITE_BATCH_SIZE.observe(size)
    COMMIT_SECONDS.observe(seconds)
