"""The SQLite writer's work per callback, without HTTP: item by item or in bulk.

Not a test. Fills a fresh temporary database with ``--items`` new SeeDance
callbacks (the bodies ``bench_load`` sends), in transactions of ``--group``,
as the writer thread would: ``writes.ingest`` one item at a time (each
callback its own writer job, as before callbacks were gathered) or
``batch.ingest_many`` over the whole group (the callbacks of one event-loop
turn, ``sqlite.coalesce``). Prints the process CPU time per callback, best
of ``--rounds``, for each way in turn in the same process.

    python scripts/bench_writer.py --items 6400 --group 32 --rounds 3

Deterministic figures: run one way under valgrind's callgrind and compare
instruction counts (``--ways one`` and ``--ways bulk``), which do not move
with what else the machine is doing.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from scripts.bench_load import ID_MARK, body_template  # noqa: E402
from server.providers.parse import parse_body  # noqa: E402
from server.store.base import Incoming, IngestOutcome  # noqa: E402
from server.store.sqlite import batch, writes  # noqa: E402
from server.store.sqlite.schema import migrate  # noqa: E402
from server.store.sqlite.writer import connect  # noqa: E402

Ingest = Callable[..., list[IngestOutcome]]
WAYS: dict[str, Ingest] = {"one": writes.ingest_many, "bulk": batch.ingest_many}


def callbacks(count: int, start: int) -> list[Incoming]:
    template = body_template()
    items = []
    for n in range(start, start + count):
        body = template.replace(ID_MARK, f"bench-{n:09d}").encode()
        observation = parse_body("seedance", body)
        assert observation.task_id is not None
        items.append(Incoming("seedance", observation.task_id, "callback", body, observation))
    return items


def cpu_per_item(path: Path, ingest: Ingest, items: Sequence[Incoming], group: int) -> float:
    conn = connect(path, synchronous="full")
    migrate(conn)
    rules = writes.Rules()
    try:
        used = time.process_time()
        for start in range(0, len(items), group):
            conn.execute("BEGIN IMMEDIATE")
            outcomes = ingest(conn, items[start : start + group], time.time(), rules)
            conn.execute("COMMIT")
            assert all(o.changed for o in outcomes)
        return (time.process_time() - used) / len(items) * 1e6
    finally:
        conn.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--items", type=int, default=6400, help="callbacks per round")
    p.add_argument("--group", type=int, default=32, help="callbacks per transaction")
    p.add_argument("--rounds", type=int, default=3, help="rounds per way (best is shown)")
    p.add_argument("--ways", default="one,bulk", help="comma-separated: one, bulk")
    args = p.parse_args(argv)
    ways = [w for w in args.ways.split(",") if w]
    with tempfile.TemporaryDirectory(prefix="bench-writer-") as tmp:
        best: dict[str, float] = {}
        for round_number in range(args.rounds):
            for way in ways:
                items = callbacks(args.items, round_number * args.items)
                db = Path(tmp) / f"{way}-{round_number}.db"
                took = cpu_per_item(db, WAYS[way], items, args.group)
                best[way] = min(best.get(way, took), took)
                print(f"  round {round_number + 1} {way:<4} {took:6.1f} µs CPU per callback")
    print()
    for way in ways:
        print(f"{way:<4} best {best[way]:6.1f} µs CPU per callback (group of {args.group})")
    if len(best) == 2:
        print(f"bulk / one: {best['bulk'] / best['one']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
