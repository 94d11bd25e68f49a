"""The store: every byte taskhook keeps goes through here.

``server.store.sqlite`` is the embedded backend (one writer thread, group
commit, WAL readers).
"""

from server.store.sqlite.store import (
    ArchiveJob,
    DueTask,
    Incoming,
    IngestOutcome,
    Registration,
    Secrets,
    Store,
    StoreClosed,
)

__all__ = [
    "ArchiveJob",
    "DueTask",
    "Incoming",
    "IngestOutcome",
    "Registration",
    "Secrets",
    "Store",
    "StoreClosed",
]
