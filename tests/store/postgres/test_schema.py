"""PostgreSQL schema: migrations run once under a lock, and match SQLite's table for table."""

from __future__ import annotations

import asyncio
import sqlite3

import psycopg
import pytest

from server.errors import SchemaTooNew
from server.store.postgres import schema as pg_schema
from server.store.sqlite import schema as sqlite_schema
from tests.pgserver import with_database


@pytest.fixture
def blank_url(pg_databases) -> str:
    """A database with no schema at all."""
    name = pg_databases._name("blank")
    pg_databases._admin.execute(f'CREATE DATABASE "{name}"')
    pg_databases.made.append(name)
    return with_database(pg_databases.server, name)


async def test_replicas_starting_together_migrate_exactly_once(blank_url):
    conns = [await psycopg.AsyncConnection.connect(blank_url, autocommit=True) for _ in range(4)]
    try:
        # Each CREATE TABLE would fail if run twice: four at once must all succeed.
        versions = await asyncio.gather(*(pg_schema.migrate(c) for c in conns))
        assert versions == [pg_schema.SCHEMA_VERSION] * 4
        rows = await (await conns[0].execute("SELECT version FROM taskhook_schema")).fetchall()
        assert rows == [(pg_schema.SCHEMA_VERSION,)]
    finally:
        for conn in conns:
            await conn.close()


async def test_a_database_of_a_newer_taskhook_is_refused(pg_databases):
    url = pg_databases.fresh()  # its own: the shared one must stay at this version
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute(
            "UPDATE taskhook_schema SET version = %s", (pg_schema.SCHEMA_VERSION + 1,)
        )
        with pytest.raises(SchemaTooNew, match="upgrade taskhook"):
            await pg_schema.migrate(conn)


def _sqlite_tables(tmp_path) -> dict[str, set[str]]:
    conn = sqlite3.connect(tmp_path / "schema.db", isolation_level=None)
    try:
        sqlite_schema.migrate(conn)
        names = [
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
        ]
        return {n: {r[1] for r in conn.execute(f"PRAGMA table_info({n})")} for n in names}
    finally:
        conn.close()


def test_both_backends_keep_the_same_tables_and_columns(postgres_url, tmp_path):
    """Every SQLite migration has its PostgreSQL twin, so copy-db moves every column."""
    assert pg_schema.SCHEMA_VERSION == sqlite_schema.SCHEMA_VERSION
    with psycopg.connect(postgres_url) as conn:
        rows = conn.execute(
            "SELECT table_name, column_name FROM information_schema.columns"
            " WHERE table_schema = 'public'"
        ).fetchall()
    pg_tables: dict[str, set[str]] = {}
    for table, column in rows:
        pg_tables.setdefault(table, set()).add(column)
    # PostgreSQL's own bookkeeping: the schema version and the commit-ordered event counter.
    for own in pg_schema.POSTGRES_ONLY_TABLES:
        pg_tables.pop(own)
    assert pg_tables == _sqlite_tables(tmp_path)


def test_raw_bodies_are_bytea(postgres_url):
    with psycopg.connect(postgres_url) as conn:
        rows = conn.execute(
            "SELECT table_name FROM information_schema.columns"
            " WHERE table_schema = 'public' AND column_name = 'body' AND data_type = 'bytea'"
        ).fetchall()
    assert {r[0] for r in rows} == {"deliveries", "quarantine"}
