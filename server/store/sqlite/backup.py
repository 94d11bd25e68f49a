"""A consistent copy of a live SQLite database (SQLite's online backup API).

The copy is read in one step from one snapshot, so it holds exactly what was
committed at that moment, while the server keeps writing (WAL readers do not
block the writer). It is written to a temporary file next to the target,
checked (``PRAGMA quick_check``), flushed to disk and renamed into place, so a
failed or interrupted backup never leaves a half-written file under the name.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path


class BackupError(Exception):
    """The copy could not be made or did not check out; the message says why."""


def backup(source: Path, target: Path) -> int:
    """Copy ``source`` into the new file ``target``; returns its size in bytes."""
    if target.exists():
        raise BackupError(f"{target} exists already; name a new file (nothing was written)")
    if not target.parent.is_dir():
        raise BackupError(f"the folder {target.parent} does not exist")
    partial = target.with_name(f".{target.name}.partial")
    partial.unlink(missing_ok=True)
    try:
        src = sqlite3.connect(source)
        try:
            src.execute("PRAGMA busy_timeout=10000")
            dst = sqlite3.connect(partial)
            try:
                src.backup(dst)  # pages=-1: every page from one read snapshot
                result = dst.execute("PRAGMA quick_check").fetchone()[0]
                if result != "ok":
                    raise BackupError(f"the copy does not check out: {result}")
                dst.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                dst.close()
        finally:
            src.close()
        with open(partial, "rb+") as copied:
            os.fsync(copied.fileno())
        for companion in (Path(f"{partial}-wal"), Path(f"{partial}-shm")):
            companion.unlink(missing_ok=True)
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    _fsync_folder(target.parent)
    return target.stat().st_size


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
