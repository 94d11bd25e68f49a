"""Two of the writer's statements, timed alone: what issue 18's third round changed.

Not a test. Each part fills a fresh temporary SQLite database (the real
schema, ``synchronous=normal``) in transactions of 32 rows, as the writer
does, and prints the CPU per callback both ways in the same process:

* ``events``: the two event rows of a callback that ends a task, each with
  the whole task (before) or the second pointing back to the first with
  ``data_back`` (now);
* ``deliveries``: a delivery insert into a table already holding ``--rows``
  deliveries of random task keys, with the second index by task
  (``deliveries_task``, dropped by schema 11) and without it.

    python scripts/bench_statements.py --rows 200000 --callbacks 40000
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from server.store.sqlite.events import INSERT_EVENT  # noqa: E402
from server.store.sqlite.schema import migrate  # noqa: E402
from server.store.sqlite.task_rows import INSERT_DELIVERY  # noqa: E402
from server.store.sqlite.writer import connect  # noqa: E402

GROUP = 32


def timed(path: Path, setup: Callable[..., None], write: Callable[..., None], n: int) -> float:
    conn = connect(path, synchronous="normal")
    migrate(conn)
    setup(conn)
    used = time.process_time()
    for i in range(n):
        if i % GROUP == 0:
            conn.execute("BEGIN IMMEDIATE")
        write(conn, i)
        if i % GROUP == GROUP - 1 or i == n - 1:
            conn.execute("COMMIT")
    took = (time.process_time() - used) / n * 1e6
    conn.close()
    return took


def events(tmp: Path, n: int) -> None:
    task = '{"task_id":"%s","status":"succeeded","results":[{"url":"' + "x" * 1700 + '"}]}'

    def rows(i: int, once: bool) -> list[tuple[object, ...]]:
        data = task % i
        first = f'{{"type":"task.status_changed","timestamp":"now","data":{data}}}'
        second = f'{{"type":"task.succeeded","timestamp":"now","data":{data}}}'
        key, now = f"k{i}", time.time()
        return [
            (f"evt_{i}a", "task.status_changed", key, "seedance", now, first, None),
            (
                f"evt_{i}b",
                "task.succeeded",
                key,
                "seedance",
                now,
                *(("", 1) if once else (second, None)),
            ),
        ]

    for label, once in (("whole body in each", False), ("body once, data_back", True)):
        took = timed(
            tmp / f"events-{once}.db",
            lambda conn: None,
            lambda conn, i, once=once: conn.executemany(INSERT_EVENT, rows(i, once)),
            n,
        )
        print(f"  events, {label:<22} {took:6.1f} µs CPU per callback")


def deliveries(tmp: Path, n: int, held: int) -> None:
    body = os.urandom(800).hex().encode()

    def fill(conn: sqlite3.Connection, second_index: bool) -> None:
        if second_index:
            conn.execute("CREATE INDEX deliveries_task ON deliveries(task_key, id)")
        conn.execute("BEGIN")
        conn.executemany(
            INSERT_DELIVERY,
            (
                (_key(f"held{i}"), "seedance", "callback", 0.0, _key(f"b{i}") * 2, b"", None, 1)
                for i in range(held)
            ),
        )
        conn.execute("COMMIT")

    def write(conn: sqlite3.Connection, i: int) -> None:
        key = _key(f"new{i}")
        row = (key, "seedance", "callback", time.time(), _key(key) * 2, body, "succeeded", 1)
        conn.execute(INSERT_DELIVERY, row)

    for label, second in (("two indexes by task", True), ("one index by task", False)):
        took = timed(tmp / f"deliveries-{second}.db", lambda c, s=second: fill(c, s), write, n)
        print(f"  deliveries ({held:,} held), {label:<19} {took:6.1f} µs CPU per callback")


def _key(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()  # noqa: S324 - random-looking keys, not security


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--callbacks", type=int, default=20_000, help="rows written per way")
    p.add_argument("--rows", type=int, default=200_000, help="deliveries held before")
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-statements-") as tmp:
        for number in range(args.rounds):
            print(f"round {number + 1}")
            folder = Path(tmp) / str(number)
            folder.mkdir()
            events(folder, args.callbacks)
            deliveries(folder, args.callbacks, args.rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
