"""The store contract for submit records (``begin_submit``, ``finish_submit``, ``get_submit``).

On every backend of ``tests.conftest.BACKENDS``; several stores on one database
stand for several processes.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import pytest

from server.store import SubmitStart

from .conftest import OpenStore

pytestmark = pytest.mark.asyncio

START = SubmitStart(
    provider="seedance",
    key="key-1",
    fingerprint="f1",
    status=504,
    body='{"error":{"code":"submit_outcome_unknown","message":"m"}}',
    lapse_after=60,
    hold_for=3600,
    forget_before=0,
)


async def test_a_new_key_begins_an_unanswered_record_holding_the_key(store) -> None:
    record, started = await store.begin_submit(START)
    assert started
    assert (record.provider, record.key, record.fingerprint) == ("seedance", "key-1", "f1")
    assert not record.answered and not record.settled(time.time())
    assert (record.status, record.body) == (START.status, START.body)
    assert record.holds_key_until is not None and record.holds_key_until > time.time() + 3000
    assert await store.get_submit(record.id) == record


async def test_a_held_key_returns_its_holder_unchanged(store) -> None:
    first, _ = await store.begin_submit(START)
    again, started = await store.begin_submit(replace(START, fingerprint="other"))
    assert not started and again == first


async def test_without_a_key_every_submit_is_its_own_record(store) -> None:
    a, started_a = await store.begin_submit(replace(START, key=None))
    b, started_b = await store.begin_submit(replace(START, key=None))
    assert started_a and started_b and a.id != b.id
    assert a.holds_key_until is None


async def test_one_holder_per_key_across_processes(open_stores: OpenStore) -> None:
    stores = [await open_stores() for _ in range(3)]
    results = await asyncio.gather(*(s.begin_submit(START) for s in stores for _ in range(4)))
    assert sum(started for _, started in results) == 1
    assert len({record.id for record, _ in results}) == 1


async def test_finish_with_a_hold_keeps_answering_with_the_record(store) -> None:
    record, _ = await store.begin_submit(START)
    done = await store.finish_submit(
        record.id, 201, '{"task_id":"t"}', task_id="t", trace_id="tr", hold_for=3600
    )
    assert done.answered and done.settled(time.time())
    assert (done.status, done.body, done.task_id, done.trace_id) == (
        201,
        '{"task_id":"t"}',
        "t",
        "tr",
    )
    assert done.answered_at is not None
    again, started = await store.begin_submit(START)
    assert not started and again == done


async def test_finish_without_a_hold_lets_go_of_the_key(store) -> None:
    record, _ = await store.begin_submit(START)
    refused = await store.finish_submit(record.id, 429, '{"error":{}}', hold_for=None)
    assert refused.holds_key_until is None
    fresh, started = await store.begin_submit(START)
    assert started and fresh.id != record.id
    assert (await store.get_submit(record.id)).status == 429  # the old record is kept


async def test_a_hold_that_ran_out_frees_the_key(store) -> None:
    record, _ = await store.begin_submit(START)
    await store.finish_submit(record.id, 201, "{}", hold_for=0.001)
    await asyncio.sleep(0.01)
    fresh, started = await store.begin_submit(START)
    assert started and fresh.id != record.id


async def test_an_unanswered_record_settles_when_it_lapses(store) -> None:
    record, _ = await store.begin_submit(replace(START, lapse_after=0.001))
    await asyncio.sleep(0.01)
    held, started = await store.begin_submit(START)
    assert not started and held.id == record.id
    assert not held.answered and held.settled(time.time())  # its pessimistic answer stands


async def test_old_records_that_hold_no_key_are_forgotten(store) -> None:
    old, _ = await store.begin_submit(replace(START, key=None))
    holder, _ = await store.begin_submit(replace(START, key="kept"))
    await store.begin_submit(replace(START, key=None, forget_before=time.time() + 1))
    assert await store.get_submit(old.id) is None
    assert await store.get_submit(holder.id) is not None


async def test_unknown_ids_are_none(store) -> None:
    for submit_id in (0, -1, 10**30, 999):
        assert await store.get_submit(submit_id) is None
