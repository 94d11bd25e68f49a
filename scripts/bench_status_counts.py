"""How long the /metrics and dashboard task counts take on a big table.

    python scripts/bench_status_counts.py [ROWS]   (default 1,000,000)

Builds a throwaway database with ROWS tasks (90% final, 10% unfinished),
then times ``Store.count_by_status()`` and ``Store.unfinished_summary()``
through the real store. Prints figures; asserts nothing.
"""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from server.settings import Settings  # noqa: E402
from server.store.sqlite.schema import migrate  # noqa: E402
from server.store.sqlite.store import SQLiteStore as Store  # noqa: E402

STATUSES = ["succeeded"] * 80 + ["failed"] * 8 + ["expired"] * 2 + ["running"] * 5 + ["pending"] * 5


def build(path: Path, rows: int) -> None:
    conn = sqlite3.connect(path)
    migrate(conn)
    conn.execute("PRAGMA journal_mode=WAL")
    now = time.time()
    state = json.dumps({"task_id": "x", "provider": "seedance", "status": "succeeded"})

    def items():
        for i in range(rows):
            status = random.choice(STATUSES)
            final = status in ("succeeded", "failed", "expired")
            created = now - random.uniform(0, 86400 * 30)
            yield (
                f"k{i:012d}",
                f"task-{i}",
                "seedance",
                status,
                state,
                created,
                created,
                None if final else now + 60,
            )

    conn.executemany(
        "INSERT INTO tasks (key, task_id, provider, status, state, created_at, updated_at,"
        " next_check_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        items(),
    )
    conn.commit()
    conn.execute("ANALYZE")
    conn.close()


async def measure(path: Path, runs: int = 7) -> None:
    settings = Settings(database_url=f"sqlite:///{path}", api_token="x", callback_secrets=("y",))
    async with Store(settings) as store:
        for name, call in (
            ("count_by_status", store.count_by_status),
            ("unfinished_summary", store.unfinished_summary),
        ):
            times = []
            for _ in range(runs):
                started = time.perf_counter()
                await call()
                times.append((time.perf_counter() - started) * 1000)
            print(
                f"{name:<20} median {statistics.median(times):7.1f} ms"
                f"  min {min(times):7.1f} ms  max {max(times):7.1f} ms  ({runs} runs)"
            )


def main() -> None:
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "bench.db"
        started = time.perf_counter()
        build(path, rows)
        print(f"built {rows:,} tasks in {time.perf_counter() - started:.1f} s")
        asyncio.run(measure(path))


if __name__ == "__main__":
    main()
