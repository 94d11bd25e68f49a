"""Whole tables in and out of a SQLite database, for ``copy-db``.

Not part of the store contract: ``server.cli.copy_db`` moves every row of
every table between two databases (of either backend) through this and its
PostgreSQL twin (``server.store.postgres.tables``). Reading happens in one
read transaction, so the copy is one consistent snapshot (WAL mode lets the
server keep writing meanwhile); writing is one transaction, so a copy that
fails leaves the target as empty as it was.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from server.store.sqlite.schema import migrate
from server.store.sqlite.writer import connect


class SQLiteTables:
    """One SQLite file, table by table."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._conn = connect(path)

    def close(self) -> None:
        self._conn.close()

    def migrate(self) -> int:
        return migrate(self._conn)

    def tables(self) -> dict[str, list[str]]:
        """Every table of taskhook's data, with its columns in order."""
        names = [
            r[0]
            for r in self._conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
                " ORDER BY name"
            )
        ]
        return {n: [r[1] for r in self._conn.execute(f'PRAGMA table_info("{n}")')] for n in names}

    def count(self, table: str, skip_keys: tuple[str, ...] = ()) -> int:
        """Rows of ``table``, leaving out those whose ``key`` is one of ``skip_keys``."""
        where = f" WHERE key NOT IN ({', '.join('?' * len(skip_keys))})" if skip_keys else ""
        sql = f'SELECT count(*) FROM "{table}"{where}'
        return int(self._conn.execute(sql, skip_keys).fetchone()[0])

    def delete_keys(self, table: str, keys: tuple[str, ...]) -> None:
        """In the copy's transaction: drop the rows of ``table`` whose ``key`` is in ``keys``."""
        if not self._conn.in_transaction:
            self._conn.execute("BEGIN IMMEDIATE")
        marks = ", ".join("?" * len(keys))
        self._conn.execute(f'DELETE FROM "{table}" WHERE key IN ({marks})', keys)

    def snapshot(self) -> None:
        """Read everything from here on from one consistent snapshot."""
        self._conn.execute("BEGIN")
        self._conn.execute("SELECT count(*) FROM sqlite_master").fetchone()  # takes the snapshot

    def rows(
        self, table: str, columns: Sequence[str], batch: int
    ) -> Iterator[list[tuple[Any, ...]]]:
        """The table's rows in primary-key order, ``batch`` at a time."""
        info = self._conn.execute(f'PRAGMA table_info("{table}")').fetchall()
        key = sorted((r[5], r[1]) for r in info if r[5])  # (position in the key, column)
        order = ", ".join(f'"{c}"' for _, c in key) if key else "rowid"
        names = ", ".join(f'"{c}"' for c in columns)
        cur = self._conn.execute(f'SELECT {names} FROM "{table}" ORDER BY {order}')
        while chunk := cur.fetchmany(batch):
            yield chunk

    def write(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """Append ``rows`` to ``table`` in the copy's one transaction (``finish`` commits)."""
        names = ", ".join(f'"{c}"' for c in columns)
        marks = ", ".join("?" * len(columns))
        if not self._conn.in_transaction:
            self._conn.execute("BEGIN IMMEDIATE")
        self._conn.executemany(f'INSERT INTO "{table}" ({names}) VALUES ({marks})', rows)

    def event_high_water(self) -> int:
        """The last event number ever handed out (pruned ones included)."""
        row = self._conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
        return int(row[0]) if row else 0

    def finish(self, event_high_water: int) -> None:
        """Commit the copy; event numbers continue after every number the source handed out."""
        if not self._conn.in_transaction:
            self._conn.execute("BEGIN IMMEDIATE")
        # The quarantine's byte counter, from the rows copied (its triggers saw them
        # arrive before the source's counter did).
        self._conn.execute(
            "INSERT OR REPLACE INTO settings (key, value) SELECT 'counter.quarantine_bytes',"
            " CAST(COALESCE(SUM(length(body)), 0) AS TEXT) FROM quarantine"
        )
        updated = self._conn.execute(
            "UPDATE sqlite_sequence SET seq = max(seq, ?) WHERE name = 'events'",
            (event_high_water,),
        ).rowcount
        if not updated and event_high_water:
            self._conn.execute(
                "INSERT INTO sqlite_sequence (name, seq) VALUES ('events', ?)", (event_high_water,)
            )
        self._conn.execute("COMMIT")

    def abort(self) -> None:
        """Undo everything written since the copy began."""
        if self._conn.in_transaction:
            self._conn.execute("ROLLBACK")
