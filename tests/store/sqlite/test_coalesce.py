"""Callbacks that arrive in one event-loop turn share one writer job, and fail alone."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from server.core.types import Status
from server.errors import Overloaded, ProviderMismatch
from server.settings import Settings
from server.store import Incoming, IngestOutcome
from server.store.sqlite.coalesce import Coalescer
from server.store.sqlite.store import SQLiteStore
from tests.store.test_contract import all_events, new_id, observed


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    settings = Settings(database_url=f"sqlite:///{tmp_path}/taskhook.db", archive=False)
    async with SQLiteStore(settings) as s:
        assert isinstance(s, SQLiteStore)
        yield s


async def test_callbacks_of_one_turn_are_one_job_and_each_gets_its_outcome(
    store: SQLiteStore,
) -> None:
    jobs: list[int] = []
    ingest_many = store.ingest_many

    async def counted(items: Sequence[Incoming]) -> list[IngestOutcome]:
        jobs.append(len(items))
        return await ingest_many(items)

    store._coalescer = Coalescer(counted)
    ids = [new_id() for _ in range(20)]
    outcomes = await asyncio.gather(*(store.ingest(observed(t, Status.SUCCEEDED)) for t in ids))
    assert jobs == [20]
    assert [o.task_id for o in outcomes] == ids
    assert all(o.changed and o.status == "succeeded" and len(o.events) == 2 for o in outcomes)
    for task_id in ids:
        record = await store.get_task(task_id)
        assert record is not None and record.state.status is Status.SUCCEEDED
    assert len(await all_events(store)) == 40
    # The next turn's callbacks make the next job.
    await store.ingest(observed(new_id(), Status.RUNNING))
    assert jobs == [20, 1]


async def test_a_mismatch_in_company_is_refused_alone(store: SQLiteStore) -> None:
    held = new_id()
    await store.ingest(observed(held, Status.RUNNING, provider="dreamina"))
    others = [new_id() for _ in range(3)]
    results = await asyncio.gather(
        *(store.ingest(observed(t, Status.SUCCEEDED)) for t in others),
        store.ingest(observed(held, Status.SUCCEEDED)),
        return_exceptions=True,
    )
    assert isinstance(results[-1], ProviderMismatch)
    assert [r.task_id for r in results[:3] if isinstance(r, IngestOutcome)] == others


# -- the coalescer alone, with a stand-in for the store's ingest_many ---------------------


def item(name: str) -> Incoming:
    return observed(name, Status.RUNNING)


class Flaky:
    """``ingest_many`` that fails any call holding ``bad`` (or raising ``refusal``)."""

    def __init__(self, bad: str = "", refusal: Exception | None = None) -> None:
        self.calls: list[list[str]] = []
        self.bad, self.refusal = bad, refusal

    async def __call__(self, items: Sequence[Incoming]) -> list[IngestOutcome]:
        names = [i.task_id for i in items]
        self.calls.append(names)
        if self.refusal is not None:
            raise self.refusal
        if self.bad in names:
            raise ValueError(f"cannot write {self.bad}")
        return [
            IngestOutcome(n, "seedance", "running", False, True, False, 0, "pending") for n in names
        ]


async def test_one_failing_item_fails_alone_and_the_rest_are_written_one_by_one() -> None:
    flaky = Flaky(bad="b")
    coalescer = Coalescer(flaky)
    results = await asyncio.gather(
        *(coalescer.ingest(item(n)) for n in "abc"), return_exceptions=True
    )
    assert isinstance(results[1], ValueError) and "cannot write b" in str(results[1])
    assert [r.task_id for r in (results[0], results[2]) if isinstance(r, IngestOutcome)] == [
        "a",
        "c",
    ]
    assert flaky.calls[0] == ["a", "b", "c"]
    assert sorted(map(tuple, flaky.calls[1:])) == [("a",), ("b",), ("c",)]


async def test_a_refusal_of_the_store_goes_to_every_item_without_retries() -> None:
    flaky = Flaky(refusal=Overloaded("busy", headers={"Retry-After": "1"}))
    coalescer = Coalescer(flaky)
    results = await asyncio.gather(
        *(coalescer.ingest(item(n)) for n in "abc"), return_exceptions=True
    )
    assert all(isinstance(r, Overloaded) for r in results)
    assert flaky.calls == [["a", "b", "c"]]


async def test_a_caller_that_gave_up_does_not_disturb_the_others() -> None:
    coalescer = Coalescer(Flaky())
    gone = asyncio.ensure_future(coalescer.ingest(item("gone")))
    kept = asyncio.ensure_future(coalescer.ingest(item("kept")))
    await asyncio.sleep(0)  # both are waiting; the job has not run yet
    gone.cancel()
    assert (await kept).task_id == "kept"
    with pytest.raises(asyncio.CancelledError):
        await gone
