"""The PostgreSQL server the tests run against, and scratch databases on it.

Where the server is: ``TASKHOOK_TEST_POSTGRES_URL``; when that is unset,
``postgresql://postgres@127.0.0.1:5432/postgres`` if a server answers there.
Without a server the PostgreSQL tests skip, saying so, unless
``TASKHOOK_REQUIRE_POSTGRES=1`` (``.ci/run`` sets it): then they fail.

Each test session (each xdist worker) migrates one template database, then
makes what its tests need from it: one shared database emptied before each
test (a ``DELETE`` of every table in one transaction, about 20 ms: much less
than creating or truncating), and fresh databases for tests that run several
servers at once. Every database it made is dropped when the session ends;
databases left behind by a session that was killed are dropped by the next
one (their names carry the pid of the process that made them).
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
        url = self._shared
        with psycopg.connect(url, autocommit=True) as conn:
            if not _reset(conn):
                # Something still holds a lock (a process a test left running): start afresh.
                self._shared = None
                return self.empty()
        return url

    def drop_all(self) -> None:
        for name in reversed(self.made):
            with contextlib.suppress(psycopg.Error):
                self._admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.made.clear()
        self._admin.close()


#: Rows the migrations seed, kept by the reset (then set back to their first value).
_KEEP = {"settings": " WHERE key <> 'counter.quarantine_bytes'"}


def _reset(conn: psycopg.Connection) -> bool:
    """Empty every table of taskhook's schema and restart its identities; False if blocked."""
    existing = {
        r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    }
    tables = sorted(existing - {"taskhook_schema", "event_counter"})
    identities = conn.execute(
        "SELECT table_name, column_name FROM information_schema.columns"
        " WHERE table_schema = 'public' AND is_identity = 'YES'"
    ).fetchall()
    try:
        with conn.transaction():
            conn.execute("SET LOCAL lock_timeout = '2s'")
            for table in tables:
                conn.execute(f'DELETE FROM "{table}"' + _KEEP.get(table, ""))
            for table, column in identities:
                conn.execute(f'ALTER TABLE "{table}" ALTER COLUMN "{column}" RESTART')
            if "event_counter" in existing:
                conn.execute("UPDATE event_counter SET seq = 0")
            # The rows the migrations seed, as a fresh database has them.
            conn.execute("UPDATE settings SET value = '0' WHERE key = 'counter.quarantine_bytes'")
    except psycopg.errors.LockNotAvailable:
        return False
    return True


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
