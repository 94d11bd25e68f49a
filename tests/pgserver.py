"""The PostgreSQL server the tests run against, and scratch databases on it.

Where the server is: ``TASKHOOK_TEST_POSTGRES_URL``; when that is unset,
``postgresql://postgres@127.0.0.1:5432/postgres`` if a server answers there.
Without a server the PostgreSQL tests skip, saying so, unless
``TASKHOOK_REQUIRE_POSTGRES=1`` (``.ci/run`` sets it): then they fail.

Each test session (each xdist worker) migrates one template database, then
makes what its tests need from it: one shared database emptied before each
test, and fresh databases for tests that run several servers at once.

Emptying is one script sent in one round trip on a connection kept open for
the session: a ``DELETE`` of every table and a ``setval`` of every identity,
in one transaction that does not wait for its WAL flush. Measured on the
development machine (15 rounds of each in one run, machine busy): a median
of 8 ms, against 130 ms for the earlier reset (a new connection, the table
list read each time, one round trip per statement, ``ALTER … RESTART``) and
290 ms for ``TRUNCATE … RESTART IDENTITY`` of the same tables (which makes
new files for every table and index).

Every database it made is dropped when the session ends; databases left
behind by a session that was killed are dropped by the next one (their names
carry the pid of the process that made them).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import re
import secrets
import threading
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from server.store.postgres.schema import migrate

URL_VARIABLE = "TASKHOOK_TEST_POSTGRES_URL"
REQUIRE_VARIABLE = "TASKHOOK_REQUIRE_POSTGRES"
DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
PREFIX = "taskhook_test_"


def with_database(url: str, name: str) -> str:
    """``url`` naming database ``name`` instead."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


@functools.cache
def server_url() -> tuple[str | None, str]:
    """(the server's URL, or None; why, for the skip message)."""
    configured = os.environ.get(URL_VARIABLE, "").strip()
    url = configured or DEFAULT_URL
    try:
        with psycopg.connect(url, connect_timeout=3, autocommit=True) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        where = URL_VARIABLE if configured else f"{DEFAULT_URL} ({URL_VARIABLE} is unset)"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return None, f"no PostgreSQL server answers at {where}: {first}"
    return url, ""


def required() -> bool:
    return os.environ.get(REQUIRE_VARIABLE, "").strip() in ("1", "on", "true", "yes")


def require_server() -> str:
    """The server's URL; skip the test (fail it under TASKHOOK_REQUIRE_POSTGRES=1) if none."""
    url, why = server_url()
    if url is None:
        if required():
            pytest.fail(f"{REQUIRE_VARIABLE}=1 but {why}", pytrace=False)
        pytest.skip(f"PostgreSQL tests skipped: {why}")
    return url


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ScratchDatabases:
    """The databases one test session makes on the server, all dropped at its end."""

    def __init__(self, server: str) -> None:
        self.server = server
        self.made: list[str] = []
        self._template: str | None = None
        self._shared: str | None = None
        self._shared_conn: psycopg.Connection | None = None
        self._reset_sql: str | None = None
        self._admin = psycopg.connect(server, autocommit=True)
        self._sweep()

    def _name(self, kind: str) -> str:
        return f"{PREFIX}{os.getpid()}_{kind}_{secrets.token_hex(4)}"

    def _sweep(self) -> None:
        """Drop databases of earlier sessions whose process is gone."""
        rows = self._admin.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE %s", (PREFIX + "%",)
        ).fetchall()
        for (name,) in rows:
            match = re.match(rf"{PREFIX}(\d+)_", name)
            if match and not _alive(int(match.group(1))):
                with contextlib.suppress(psycopg.Error):
                    self._admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def template(self) -> str:
        """A migrated, never connected-to-after database to copy from."""
        if self._template is None:
            name = self._name("tpl")
            self._admin.execute(f'CREATE DATABASE "{name}"')
            self.made.append(name)

            async def prepare() -> None:
                conn = await psycopg.AsyncConnection.connect(
                    with_database(self.server, name), autocommit=True
                )
                async with conn:
                    await migrate(conn)

            _run_in_thread(prepare)  # a test's event loop may be running in this thread
            self._template = name
        return self._template

    def fresh(self) -> str:
        """A new database, migrated (copied from the template); its URL."""
        name = self._name("db")
        self._admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{self.template()}"')
        self.made.append(name)
        return with_database(self.server, name)

    def blank(self) -> str:
        """A new database without even the schema (servers racing to migrate it); its URL."""
        name = self._name("blank")
        self._admin.execute(f'CREATE DATABASE "{name}"')
        self.made.append(name)
        return with_database(self.server, name)

    def empty(self) -> str:
        """The session's shared database with every table emptied; its URL."""
        if self._shared is None:
            self._shared = self.fresh()
            self._reset_sql = None
        url = self._shared
        try:
            if self._shared_conn is None or self._shared_conn.closed:
                self._shared_conn = psycopg.connect(url, autocommit=True)
            if self._reset_sql is None:
                self._reset_sql = _reset_script(self._shared_conn)
            self._shared_conn.execute(self._reset_sql)
        except psycopg.errors.LockNotAvailable:
            # Something still holds a lock (a process a test left running): start afresh.
            self._close_shared()
            self._shared = None
            return self.empty()
        return url

    def _close_shared(self) -> None:
        if self._shared_conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._shared_conn.close()
            self._shared_conn = None

    def drop_all(self) -> None:
        self._close_shared()
        for name in reversed(self.made):
            with contextlib.suppress(psycopg.Error):
                self._admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.made.clear()
        self._admin.close()


#: Rows the migrations seed, kept by the reset (then set back to their first value).
_KEEP = {"settings": " WHERE key <> 'counter.quarantine_bytes'"}


def _reset_script(conn: psycopg.Connection) -> str:
    """SQL that empties every table of taskhook's schema and restarts its identities.

    The rows the migrations seed are kept (or set back to their first value),
    so the database is as a fresh one. Read once per database: the schema does
    not change after the template was migrated.
    """
    existing = {
        r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    }
    identities = conn.execute(
        "SELECT table_name, column_name FROM information_schema.columns"
        " WHERE table_schema = 'public' AND is_identity = 'YES' ORDER BY 1, 2"
    ).fetchall()
    steps = [
        "BEGIN",
        "SET LOCAL lock_timeout = '2s'",
        "SET LOCAL synchronous_commit = off",  # a test database: no need to wait for the disk
    ]
    steps += [
        f'DELETE FROM "{table}"' + _KEEP.get(table, "")
        for table in sorted(existing - {"taskhook_schema", "event_counter"})
    ]
    steps += [
        f"SELECT setval(pg_get_serial_sequence('\"{table}\"', '{column}'), 1, false)"
        for table, column in identities
    ]
    if "event_counter" in existing:
        steps.append("UPDATE event_counter SET seq = 0")
    steps.append("UPDATE settings SET value = '0' WHERE key = 'counter.quarantine_bytes'")
    steps.append("COMMIT")
    return ";\n".join(steps)


def _run_in_thread(coro_fn) -> None:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(coro_fn())
        except BaseException as exc:  # re-raised in the caller's thread
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
