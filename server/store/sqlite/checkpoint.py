"""The WAL checkpointer: copies committed pages into the database file off the writer's path.

SQLite checkpoints by itself inside the ``COMMIT`` that grows the WAL past
1,000 pages, so one callback in every few groups waits for the copy and an
fsync of the database file. Here the writer's automatic checkpoint is only a
backstop (``WRITER_AUTOCHECKPOINT`` pages) and this thread runs a ``PASSIVE``
checkpoint every ``INTERVAL`` seconds on its own connection: it never blocks
the writer or the readers, and the WAL stays small.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
from pathlib import Path

log = logging.getLogger("taskhook.checkpoint")

#: Seconds between two checkpoints. Short, so that each copies little: a checkpoint's
#: copy takes the CPU in one burst, and under load one every second (~25 MB of WAL)
#: was the slowest 1% of callbacks (p99 at 16 connections 19-37 ms; every 0.05 s,
#: 10 ms). An idle one costs a few microseconds.
INTERVAL = 0.05
#: The writer checkpoints by itself only past this many WAL pages (40 MB).
WRITER_AUTOCHECKPOINT = 10_000


class Checkpointer:
    """One thread with one connection; ``stop()`` runs a last checkpoint and joins."""

    def __init__(self, path: Path, *, synchronous: str = "full", interval: float = INTERVAL):
        self.path, self.synchronous, self.interval = path, synchronous, interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="taskhook-checkpoint", daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            conn.execute(f"PRAGMA synchronous={self.synchronous.upper()}")
            conn.execute("PRAGMA busy_timeout=1000")
            while True:
                stopping = self._stop.wait(self.interval)
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error as exc:  # busy or gone: the next round tries again
                    log.debug("checkpoint skipped: %s", exc)
                if stopping:
                    return
        finally:
            with contextlib.suppress(sqlite3.Error):
                conn.close()
