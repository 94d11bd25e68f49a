"""``python -m server backup PATH``: a consistent copy of the SQLite database, while it serves.

Safe beside running servers: the copy is one snapshot of what was committed.
Restore by stopping taskhook and putting the copy where ``DATABASE_URL``
points (or pointing ``DATABASE_URL`` at it). For PostgreSQL it says to use
``pg_dump``. Exit codes: 0 copied, 1 the copy failed, 2 a bad PATH or a
database taskhook does not back up itself.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

from server.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from server.settings import Settings
from server.store import open_store
from server.store.sqlite.backup import BackupError


def add_parser(commands: Any) -> None:
    p = commands.add_parser("backup", help="copy the SQLite database to PATH while it serves")
    p.add_argument("path", metavar="PATH", help="a new file for the copy")


def run(settings: Settings, path: str) -> int:
    if settings.database_url.startswith(("postgresql://", "postgres://")):
        print(
            "backup: DATABASE_URL is a PostgreSQL database; back it up with pg_dump "
            '(e.g. pg_dump --format=custom --file=taskhook.dump "$DATABASE_URL")',
            file=sys.stderr,
        )
        return EXIT_USAGE
    target = Path(path)
    if target.exists() or not target.parent.is_dir():
        reason = "exists already" if target.exists() else "is in a folder that does not exist"
        print(f"backup: {path} {reason}; name a new file", file=sys.stderr)
        return EXIT_USAGE
    started = time.monotonic()
    try:
        size, tasks = asyncio.run(copy(settings, path))
    except (BackupError, OSError) as exc:
        print(f"backup: failed, nothing was written to {path}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(
        f"backup: {settings.database_label} -> {path}: {tasks} tasks, {size} bytes "
        f"in {time.monotonic() - started:.1f}s"
    )
    return EXIT_OK


async def copy(settings: Settings, path: str) -> tuple[int, int]:
    """(bytes, tasks) of the copy made at ``path``."""
    async with open_store(settings) as store:
        size = await store.backup(path)
        tasks = sum((await store.count_by_status()).values())
    return size, tasks
