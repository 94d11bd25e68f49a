"""Storage metrics read from the database at scrape time: its size, what retention dropped.

The counts live in the database (``Store.counter``), so every process's
``/metrics`` says the same whichever one dropped the bytes. They are read at
most once per ``MAX_AGE`` seconds per store and exposed by a collector as
Prometheus counters and gauges.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from server.store import Store

MAX_AGE = 5.0

#: (metric name without ``_total``, store counter, help)
COUNTERS = (
    ("taskhook_pruned_bytes", "pruned_bytes", "Bytes of raw bodies dropped by retention."),
    ("taskhook_pruned_bodies", "pruned_bodies", "Raw bodies dropped by retention."),
    (
        "taskhook_quarantine_dropped",
        "quarantine_dropped",
        "Quarantined deliveries dropped by QUARANTINE_MAX_ROWS or QUARANTINE_MAX_BYTES.",
    ),
    (
        "taskhook_quarantine_dropped_bytes",
        "quarantine_dropped_bytes",
        "Bytes of quarantined bodies dropped by the caps.",
    ),
)


@dataclass
class StorageSnapshot:
    database_bytes: int = 0
    quarantine_bytes: int = 0
    counters: dict[str, int] = field(default_factory=dict)
    taken_at: float = field(default_factory=time.monotonic)


_snapshots: weakref.WeakKeyDictionary[Store, StorageSnapshot] = weakref.WeakKeyDictionary()
_latest: StorageSnapshot | None = None


async def refresh(store: Store) -> StorageSnapshot:
    """Read the storage figures (cached for ``MAX_AGE``); the collector exposes the latest."""
    global _latest
    cached = _snapshots.get(store)
    if cached is None or time.monotonic() - cached.taken_at >= MAX_AGE:
        cached = StorageSnapshot(
            database_bytes=await store.database_bytes(),
            quarantine_bytes=await store.counter("quarantine_bytes"),
            counters={name: await store.counter(name) for _, name, _ in COUNTERS},
        )
        _snapshots[store] = cached
    _latest = cached
    return cached


class StorageCollector(Collector):
    """Exposes the latest snapshot; nothing before the first scrape read one."""

    def collect(self) -> Iterator[Metric]:
        snapshot = _latest
        if snapshot is None:
            return
        yield GaugeMetricFamily(
            "taskhook_database_bytes",
            "Size of the database on disk (SQLite: the file and its WAL).",
            value=snapshot.database_bytes,
        )
        yield GaugeMetricFamily(
            "taskhook_quarantine_bytes",
            "Bytes of bodies the quarantine holds (capped by QUARANTINE_MAX_BYTES).",
            value=snapshot.quarantine_bytes,
        )
        for metric, name, help_text in COUNTERS:
            yield CounterMetricFamily(metric, help_text, value=snapshot.counters.get(name, 0))
