"""Whether the configured database can be opened and written, in one line a person can act on.

Used by ``serve`` before it prints anything and by ``check``. A full disk says
the disk is full, a folder that cannot be created or written says which and
what to do, instead of SQLite's or the OS's raw words.
"""

from __future__ import annotations

import errno
import math
import os
import sqlite3
import tempfile

from server.errors import ConfigError, StorageFull
from server.settings import Settings
from server.store import open_store

_FULL = ("database or disk is full", "no space left on device")
#: Less free space than this, and a write failed: the disk is full for our purposes.
FULL_BELOW = 64 * 1024


async def database_problem(settings: Settings) -> str | None:
    """None when a write commits now; otherwise what is wrong and the fix, in one line."""
    try:
        async with open_store(settings) as store:
            await store.check_writable()
    except ConfigError as exc:
        return str(exc)
    except Exception as exc:  # every failure is explained, none is raised
        return explain(settings, exc)
    return None


def explain(settings: Settings, exc: BaseException) -> str:
    where = f"DATABASE_URL={settings.database_label!r}"
    if is_disk_full(exc) or _free_bytes(settings) < FULL_BELOW:
        return (
            f"{where}: the disk holding the database is full; free some space on it "
            "or move the database to a larger disk"
        )
    unwritable = isinstance(exc, PermissionError) or _says(exc, "readonly", "read-only")
    if unwritable or not _folder_writable(settings):
        return (
            f"{where}: the database or its folder is not writable by this user; make it "
            "writable, or point DATABASE_URL at a folder that is "
            "(e.g. DATABASE_URL=sqlite:///./data/taskhook.db)"
        )
    if isinstance(exc, (NotADirectoryError, FileExistsError)):
        return (
            f"{where}: a file is in the way of the database folder ({exc.filename}); "
            "move it, or point DATABASE_URL elsewhere"
        )
    if isinstance(exc, OSError) or _says(exc, "unable to open database file"):
        return (
            f"{where}: the database cannot be created or opened ({_reason(exc)}); check that "
            "its folder exists or can be created and is writable"
        )
    return f"{where}: the database did not take a write ({_reason(exc)})"


def _folder_writable(settings: Settings) -> bool:
    """False when the database's folder exists and refuses a new file (True when unknown)."""
    try:
        folder = settings.database_path.parent
        if not folder.is_dir():
            return True
        with tempfile.TemporaryFile(dir=folder):
            return True
    except ConfigError:
        return True
    except OSError as exc:
        return exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS)


def _free_bytes(settings: Settings) -> float:
    """Bytes free for this user on the disk of a SQLite database (inf when unknown).

    SQLite does not always say "full": a WAL index that cannot grow on a full
    disk reports "disk I/O error". The disk itself is the reliable witness.
    """
    try:
        folder = settings.database_path.parent
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        stats = os.statvfs(folder)
    except (ConfigError, OSError):
        return math.inf
    return float(stats.f_bavail * stats.f_frsize)


def is_disk_full(exc: BaseException | None) -> bool:
    """True when ``exc`` (or what it was raised from) says the disk is full."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, StorageFull):
            return True
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            return True
        if isinstance(exc, sqlite3.Error) and _says(exc, *_FULL):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def _says(exc: BaseException, *words: str) -> bool:
    text = str(exc).lower()
    return any(word in text for word in words)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return f"{type(exc).__name__}: {exc}"
