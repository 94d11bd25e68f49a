"""Connections to PostgreSQL: the URL, the start-up check, the pool, and error translation.

Every connection taskhook opens is autocommit (transactions are explicit),
sets ``synchronous_commit = on`` whatever the server's default (a COMMIT
returns only once its WAL is flushed: an acknowledged callback survives a
crash of the database server), names itself ``taskhook`` in
``pg_stat_activity``, and uses TCP keepalives, so a replica that vanished
without closing its sockets stops holding row locks within about a minute.

``reach`` is the start-up check: it connects once and turns the driver's
failure into one line naming ``DATABASE_URL`` (password hidden) and the fix.
``unavailable`` translates the driver's connection errors at the boundary
into ``StoreUnavailable`` (503), so a lost server is an error, never a 200.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import psycopg_pool
from psycopg import errors as pg_errors

from server.errors import ConfigError, StoreUnavailable

#: Seconds a connection attempt may take before it counts as unreachable.
CONNECT_TIMEOUT = 5
#: Seconds a request waits for a free pooled connection before it gets a 503.
POOL_TIMEOUT = 5.0

#: Session settings of every taskhook connection.
SESSION_OPTIONS = (
    "-c synchronous_commit=on"
    # A process stuck inside a transaction must not hold task locks for ever.
    " -c idle_in_transaction_session_timeout=60000"
)

CONNECT_KWARGS: dict[str, Any] = {
    "autocommit": True,
    "application_name": "taskhook",
    "connect_timeout": CONNECT_TIMEOUT,
    "options": SESSION_OPTIONS,
    "keepalives": 1,
    "keepalives_idle": 15,
    "keepalives_interval": 5,
    "keepalives_count": 4,
}


def is_postgres_url(url: str) -> bool:
    return url.startswith(("postgresql://", "postgres://"))


def conninfo(url: str) -> str:
    """The URL as libpq takes it (``postgres://`` is spelled ``postgresql://``)."""
    if url.startswith("postgres://"):
        return "postgresql://" + url[len("postgres://") :]
    return url


def label(url: str) -> str:
    """The URL for messages and logs: the password, if any, shown as ``***``."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return url.split("@")[-1] if "@" in url else url
    if not password:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def _reason(exc: BaseException, url: str) -> str:
    """The driver's message on one line, with nothing of the password in it."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = " ".join("; ".join(lines).split()) or type(exc).__name__
    text = text.removeprefix("connection failed: ")
    with contextlib.suppress(ValueError):
        password = urlsplit(url).password
        if password:
            text = text.replace(password, "***")
    return text


async def reach(url: str) -> None:
    """Connect once and run ``SELECT 1``; ``ConfigError`` (one line) if that fails.

    The message names ``DATABASE_URL`` with its password hidden, says what the
    server answered (refused, unknown host, authentication failed, no such
    database) and what to check.
    """
    try:
        conn = await psycopg.AsyncConnection.connect(conninfo(url), **CONNECT_KWARGS)
    except (psycopg.Error, OSError) as exc:
        raise ConfigError(
            f"DATABASE_URL={label(url)!r}: cannot connect to PostgreSQL: {_reason(exc, url)};"
            " check its host, port, user, password and database name"
        ) from None
    async with conn:
        await conn.execute("SELECT 1")


def open_pool(url: str, size: int) -> psycopg_pool.AsyncConnectionPool[psycopg.AsyncConnection]:
    """A pool of at most ``size`` connections (DATABASE_POOL_SIZE), not opened yet.

    A connection found broken is replaced; while the server is away, waiting
    for a connection fails after ``POOL_TIMEOUT`` and the pool keeps trying to
    reconnect in the background, so service resumes by itself when it returns.
    """
    return psycopg_pool.AsyncConnectionPool(
        conninfo(url),
        kwargs=dict(CONNECT_KWARGS),
        min_size=1,
        max_size=size,
        open=False,
        name="taskhook",
        timeout=POOL_TIMEOUT,
        check=psycopg_pool.AsyncConnectionPool.check_connection,
        reconnect_timeout=24 * 3600.0,
        max_idle=300.0,
    )


async def connect(url: str) -> psycopg.AsyncConnection:
    """One connection outside the pool (the listener, the writer, migrations)."""
    try:
        return await psycopg.AsyncConnection.connect(conninfo(url), **CONNECT_KWARGS)
    except (psycopg.Error, OSError) as exc:
        raise StoreUnavailable(
            f"the database at {label(url)} cannot be reached: {_reason(exc, url)}"
        ) from exc


#: Errors that mean the connection or the server is gone, not that the query was wrong.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    psycopg.OperationalError,
    psycopg.InterfaceError,
    psycopg_pool.PoolTimeout,
    psycopg_pool.PoolClosed,
    OSError,
)


def is_connection_error(exc: BaseException) -> bool:
    """The server went away, refused us, or is shutting down (not a bad query)."""
    if isinstance(exc, pg_errors.AdminShutdown | pg_errors.CrashShutdown):
        return True
    if isinstance(exc, pg_errors.CannotConnectNow | pg_errors.IdleInTransactionSessionTimeout):
        return True
    if isinstance(exc, psycopg.errors.QueryCanceled):
        return False
    return isinstance(exc, CONNECTION_ERRORS)


@contextlib.asynccontextmanager
async def unavailable(url: str, what: str) -> AsyncIterator[None]:
    """Turn a lost connection inside the block into ``StoreUnavailable`` naming ``what``.

    A write whose COMMIT did not answer may or may not have committed; the
    caller gets an error either way, never a success it cannot vouch for.
    """
    try:
        yield
    except Exception as exc:
        if is_connection_error(exc):
            raise StoreUnavailable(
                f"{what} failed: the database at {label(url)} is not reachable"
                f" ({_reason(exc, url)}); retry later"
            ) from exc
        raise


def pyformat(sql: str) -> str:
    """Shared SQL text (``?`` placeholders, ``server.store.statements``) as psycopg takes it."""
    return sql.replace("%", "%%").replace("?", "%s")
