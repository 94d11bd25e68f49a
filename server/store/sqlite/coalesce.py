"""Callbacks that arrive together go to the writer together.

Each callback asks the store for one ``ingest``. Under load many of them
reach that point in the same turn of the event loop; ``Coalescer`` hands
them to the writer as one ``ingest_many`` job at the end of that turn, so
they share its statements (``batch.ingest_many``: one read of their tasks,
one ``executemany`` per table) and its bookkeeping, instead of one job each.
A caller still gets its own outcome only once the job has committed.

A failure of the whole job is not blamed on every item in it: a refusal of
the store itself (overloaded, disk full, closed, writer gone) is, since each
item alone would meet it too; anything else is retried item by item, each
in a job of its own, so one bad item fails alone, as it would have without
the company.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from server.errors import Overloaded, StorageFull, StoreClosed, StoreUnavailable
from server.store.base import Incoming, IngestOutcome

#: What every item would meet alone: no point retrying them one by one.
REFUSALS = (Overloaded, StorageFull, StoreClosed, StoreUnavailable)

IngestMany = Callable[[Sequence[Incoming]], Awaitable[list[IngestOutcome]]]
_Waiting = list[tuple[Incoming, "asyncio.Future[IngestOutcome]"]]


class Coalescer:
    """``ingest`` of one item, gathered per event-loop turn into one ``ingest_many``."""

    def __init__(self, ingest_many: IngestMany) -> None:
        self._ingest_many = ingest_many
        self._waiting: dict[asyncio.AbstractEventLoop, _Waiting] = {}
        self._running: set[asyncio.Task[None]] = set()

    async def ingest(self, item: Incoming) -> IngestOutcome:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[IngestOutcome] = loop.create_future()
        waiting = self._waiting.get(loop)
        if waiting is None:
            waiting = self._waiting[loop] = []
            loop.call_soon(self._flush, loop)
        waiting.append((item, future))
        return await future

    async def drain(self) -> None:
        """Send what waits for the end of this turn now; return once every job has ended."""
        self._flush(asyncio.get_running_loop())
        while self._running:
            await asyncio.wait(set(self._running))

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        waiting = self._waiting.pop(loop, [])
        if waiting:
            task = loop.create_task(self._run(waiting))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _run(self, waiting: _Waiting) -> None:
        try:
            outcomes = await self._ingest_many([item for item, _ in waiting])
        except REFUSALS as exc:
            for _, future in waiting:
                _fail(future, exc)
        except Exception as exc:
            if len(waiting) == 1:
                _fail(waiting[0][1], exc)
            else:
                await asyncio.gather(*(self._alone(item, future) for item, future in waiting))
        else:
            for (_, future), outcome in zip(waiting, outcomes, strict=True):
                _succeed(future, outcome)

    async def _alone(self, item: Incoming, future: asyncio.Future[IngestOutcome]) -> None:
        try:
            (outcome,) = await self._ingest_many([item])
        except Exception as exc:
            _fail(future, exc)
        else:
            _succeed(future, outcome)


def _succeed(future: asyncio.Future[IngestOutcome], outcome: IngestOutcome) -> None:
    if not future.done():  # its caller may have given up
        future.set_result(outcome)


def _fail(future: asyncio.Future[IngestOutcome], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
