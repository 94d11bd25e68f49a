"""``python -m server prune``: drop what ``RETENTION_DAYS`` and the quarantine caps allow now.

Safe beside running servers (small transactions). Prints what it freed. The
database file does not shrink (SQLite reuses the freed pages for new data);
``VACUUM`` while taskhook is stopped gives the space back to the disk.
Exit codes: 0 done, 1 it failed part-way (what was dropped stays dropped).
"""

from __future__ import annotations

import sys
from typing import Any

from server.cli import EXIT_FAILED, EXIT_OK
from server.retention import describe, prune
from server.settings import Settings
from server.store import open_store


def add_parser(commands: Any) -> None:
    commands.add_parser("prune", help="drop old raw bodies and quarantine beyond its caps, now")


async def run(settings: Settings) -> int:
    try:
        async with open_store(settings) as store:
            pruned = await prune(store, settings)
            size = await store.database_bytes()
    except Exception as exc:  # reported in one line; what was dropped stays dropped
        print(f"prune: failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    kept = (
        "raw bodies are kept forever (RETENTION_DAYS=0)"
        if settings.retention_days == 0
        else f"raw bodies are kept {settings.retention_days} days after their task ended"
    )
    print(f"prune: {describe(pruned)}; {kept}; the database is {size} bytes")
    return EXIT_OK
