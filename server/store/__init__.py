"""The store: every byte taskhook keeps goes through here.

``server.store.base`` states the contract (``Store``), ``server.store.records``
the records it speaks in; this package exports both;
``open_store(settings)`` picks the backend from ``DATABASE_URL``'s scheme.
``server.store.sqlite`` is the embedded backend (one writer thread, group
commit, WAL readers); ``server.store.postgres`` is the one several replicas
share (a pool per process, group commit, row locks, LISTEN/NOTIFY); nothing
outside this package imports them.
"""

from __future__ import annotations

from server.errors import ConfigError
from server.settings import Settings
from server.store import base
from server.store.base import *  # noqa: F403 - the contract and its records, as asyncio does
from server.store.base import Store
from server.store.sql import OnCommit

__all__ = ["open_store"]
__all__ += base.__all__


def open_store(settings: Settings, *, on_commit: OnCommit = None) -> Store:
    """The store for ``settings.database_url``, not opened yet.

    Open it with ``async with open_store(settings) as store:`` (or ``await
    store.open()`` / ``await store.close()``). ``sqlite:///…`` is the embedded
    backend; ``postgresql://…`` (or ``postgres://…``) the PostgreSQL one.
    ``on_commit(size, seconds)`` is called after each group commit (metrics).
    """
    url = settings.database_url
    scheme = url.partition(":")[0].lower()
    if scheme == "sqlite":
        from server.store.sqlite.store import SQLiteStore

        return SQLiteStore(settings, on_commit=on_commit)
    if scheme in ("postgresql", "postgres"):
        from server.store.postgres.store import PostgresStore

        return PostgresStore(settings, on_commit=on_commit)
    raise ConfigError(
        f"DATABASE_URL has the scheme {scheme!r}, which taskhook does not know; "
        "use sqlite:///relative/path.db or sqlite:////absolute/path.db."
    )
