"""The cyclic collector's share of a callback, with and without ``settled_heap``.

Not a test. Runs taskhook's app in this process (its lifespan, a fresh SQLite
file, the callback route through ``httpx.ASGITransport``) and sends
``--callbacks`` SeeDance callbacks, ``--concurrency`` at a time, twice per
round: once with ``settled_heap`` replaced by a no-op (CPython's defaults), then
as the app serves (start-up heap frozen, youngest generation collected every
``YOUNG_THRESHOLD`` net allocations, or each of ``--young``). ``gc.callbacks``
times every collection; the script prints, per way, collections by
generation, the collector's time per callback, its longest pause, and the
process CPU per callback.

    python scripts/bench_gc.py --callbacks 6000 --rounds 2

In-process, the client's own objects are on the heap as well, so the
collector's share here is not the server's alone; both ways carry the same.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import gc
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

import server.web.app as web_app  # noqa: E402
from scripts.bench_load import CALLBACK_SECRET, ID_MARK, PROVIDER, body_template  # noqa: E402
from server.core.tokens import callback_token  # noqa: E402
from server.observe.heap import YOUNG_THRESHOLD  # noqa: E402
from server.settings import Settings  # noqa: E402


class Collections:
    """Counts and times the collector's passes while installed."""

    def __init__(self) -> None:
        self.count = [0, 0, 0]
        self.seconds = 0.0
        self.longest = 0.0
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        spent = time.perf_counter() - self._started
        self.count[info["generation"]] += 1
        self.seconds += spent
        self.longest = max(self.longest, spent)


@contextlib.contextmanager
def unsettled() -> Iterator[None]:
    yield


async def one_run(workdir: Path, young: int | None, callbacks: int, concurrency: int) -> dict:
    os.environ.update(
        DATABASE_URL=f"sqlite:///{workdir / 'bench.db'}",
        API_TOKEN="bench-api-token",
        CALLBACK_SECRETS=CALLBACK_SECRET,
        RECONCILER="off",
        ARCHIVE="off",
        LOG_FORMAT="text",
    )
    web_app.settled_heap = (  # type: ignore[assignment]
        unsettled if young is None else functools.partial(real_settled, young)
    )
    app = web_app.create_app(Settings.from_env())
    template = body_template()
    path = f"/callbacks/{PROVIDER}/{callback_token(CALLBACK_SECRET, PROVIDER)}"
    tag = young or 0
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:

            async def send(n: int) -> None:
                body = template.replace(ID_MARK, f"gc-{tag}-{n:09d}")
                response = await client.post(path, content=body)
                assert response.status_code == 200, response.text

            await send(-1)  # warm up
            watch = Collections()
            gc.callbacks.append(watch)
            cpu = time.process_time()
            try:
                for start in range(0, callbacks, concurrency):
                    await asyncio.gather(*(send(n) for n in range(start, start + concurrency)))
            finally:
                cpu = time.process_time() - cpu
                gc.callbacks.remove(watch)
    return {
        "count": watch.count,
        "gc_us": watch.seconds / callbacks * 1e6,
        "longest_ms": watch.longest * 1e3,
        "cpu_us": cpu / callbacks * 1e6,
    }


real_settled = web_app.settled_heap


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--callbacks", type=int, default=6000)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument(
        "--young",
        default=str(YOUNG_THRESHOLD),
        help="comma-separated youngest-generation thresholds to run settled with",
    )
    args = p.parse_args()
    sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - the app logs a line per callback
    print(f"{args.callbacks} callbacks, {args.concurrency} at a time, {args.rounds} rounds")
    print(
        "| round | heap | collections gen0/1/2 | collector µs/callback | longest pause ms |"
        " CPU µs/callback |"
    )
    print("|---|---|---|---|---|---|")
    for n in range(1, args.rounds + 1):
        for young in (None, *(int(y) for y in args.young.split(","))):
            with tempfile.TemporaryDirectory() as tmp:
                r = asyncio.run(one_run(Path(tmp), young, args.callbacks, args.concurrency))
            name = "default" if young is None else f"settled, {young}"
            counts = "/".join(map(str, r["count"]))
            print(
                f"| {n} | {name} | {counts} | {r['gc_us']:.1f} | {r['longest_ms']:.1f} |"
                f" {r['cpu_us']:.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
