"""``python -m server copy-db --to URL``: everything in the configured database, into an empty one.

The path from one machine to several: stop the server, ``copy-db`` from the
SQLite file to a PostgreSQL database, point ``DATABASE_URL`` at it and start
as many replicas as wanted (and back: PostgreSQL to SQLite works the same).

Every table is copied, whatever it holds (tasks, deliveries, quarantine,
archive records, events, settings with the stored secrets and counters,
leases), column for column: both backends keep the same tables (a test
holds them to it). The source is read in one snapshot; the target is
written in one transaction, so a failed copy leaves it empty. Row ids,
cursors and event numbers are kept, so every cursor handed out before the
copy stays valid after it. A target that holds any row is refused.

Exit codes: 0 copied; 1 the copy failed (the target is left empty); 2 a bad
or non-empty target, or a database that cannot be reached.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Protocol, TextIO

from server.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from server.errors import ConfigError
from server.settings import Settings, database_path, hide_password

#: Rows per read from the source (and per progress step).
BATCH = 2000
#: At most one progress line per table this often (seconds), plus one at its end.
PROGRESS_EVERY = 2.0
#: Rows the migrations themselves make (a fresh database holds them): not "data" when
#: judging whether the target is empty, and replaced by the source's during the copy.
SEEDED: dict[str, tuple[str, ...]] = {"settings": ("counter.quarantine_bytes",)}


class Tables(Protocol):
    """One database, table by table (``server.store.{sqlite,postgres}.tables``)."""

    def migrate(self) -> int: ...
    def tables(self) -> dict[str, list[str]]: ...
    def count(self, table: str, skip_keys: tuple[str, ...] = ()) -> int: ...
    def delete_keys(self, table: str, keys: tuple[str, ...]) -> None: ...
    def snapshot(self) -> None: ...
    def rows(self, table: str, columns: list[str], batch: int) -> Any: ...
    def write(self, table: str, columns: list[str], rows: Any) -> None: ...
    def event_high_water(self) -> int: ...
    def finish(self, event_high_water: int) -> None: ...
    def abort(self) -> None: ...
    def close(self) -> None: ...


def add_parser(commands: Any) -> None:
    p = commands.add_parser(
        "copy-db",
        help="copy everything into an empty database (SQLite to PostgreSQL, or back)",
        description=__doc__.splitlines()[0] if __doc__ else None,
    )
    p.add_argument("--to", required=True, metavar="DATABASE_URL", help="the empty target")


def open_tables(url: str) -> Tables:
    """The table access for ``url``: a ``sqlite:///`` file or a ``postgresql://`` database."""
    if url.startswith("sqlite:///"):
        from server.store.sqlite.tables import SQLiteTables

        return SQLiteTables(database_path(url))
    if url.startswith(("postgresql://", "postgres://")):
        import asyncio

        from server.store.postgres.connection import reach
        from server.store.postgres.tables import PostgresTables

        asyncio.run(reach(url))
        return PostgresTables(url)
    raise ConfigError(
        f"--to {hide_password(url)!r} is not a sqlite:/// or postgresql:// URL;"
        " use e.g. --to postgresql://user:password@host:5432/taskhook"
    )


def run(settings: Settings, target_url: str, out: TextIO = sys.stderr) -> int:
    source_url = settings.database_url
    shown_source, shown_target = settings.database_label, hide_password(target_url)
    if target_url.strip() == source_url.strip():
        print(f"copy-db: --to names the configured database ({shown_source}) itself", file=out)
        return EXIT_USAGE
    try:
        source = open_tables(source_url)
        target = open_tables(target_url)
    except ConfigError as exc:
        print(f"copy-db: {exc}", file=out)
        return EXIT_USAGE
    try:
        source.migrate()
        target.migrate()
        columns = source.tables()
        if columns != target.tables():
            print(
                f"copy-db: the tables of {shown_source} and {shown_target} differ;"
                " run the same taskhook version on both",
                file=out,
            )
            return EXIT_FAILED
        held = {t: n for t in sorted(columns) if (n := target.count(t, SEEDED.get(t, ())))}
        if held:
            listed = ", ".join(f"{t} ({n} rows)" for t, n in held.items())
            print(
                f"copy-db: {shown_target} is not empty: {listed}; copy-db only fills an empty"
                " database (create a new one, or remove that file)",
                file=out,
            )
            return EXIT_USAGE
        source.snapshot()
        print(f"copy-db: from {shown_source} to {shown_target}", file=out)
        copied = _copy(source, target, columns, out)
    except Exception as exc:  # reported on one line; the target is rolled back
        target.abort()
        print(
            f"copy-db: failed ({type(exc).__name__}: {exc}); {shown_target} was left empty",
            file=out,
        )
        return EXIT_FAILED
    finally:
        source.close()
        target.close()
    total = sum(copied.values())
    print(f"copy-db: done, {total} rows in {len(copied)} tables", file=out)
    return EXIT_OK


def _copy(
    source: Tables, target: Tables, columns: dict[str, list[str]], out: TextIO
) -> dict[str, int]:
    totals = {table: source.count(table) for table in sorted(columns)}
    for table, keys in SEEDED.items():
        target.delete_keys(table, keys)  # the source's own come with its rows
    copied: dict[str, int] = {}
    for table, total in totals.items():
        done, shown_at = 0, time.monotonic()
        for chunk in source.rows(table, columns[table], BATCH):
            target.write(table, columns[table], chunk)
            done += len(chunk)
            if time.monotonic() - shown_at >= PROGRESS_EVERY:
                print(f"copy-db: {table}: {done}/{total} rows", file=out, flush=True)
                shown_at = time.monotonic()
        print(f"copy-db: {table}: {done}/{total} rows copied", file=out, flush=True)
        copied[table] = done
    target.finish(source.event_high_water())
    return copied
