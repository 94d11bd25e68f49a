"""What only the SQLite backend has: the writer thread and its group commit, WAL, PRAGMAs,
migrations of existing files, query plans, and how the writer fails (death, overload, full disk).
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import threading
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from server.core.types import Observation, Status
from server.errors import Overloaded, SchemaTooNew, StorageFull, StoreUnavailable
from server.settings import Settings
from server.store import Incoming, Registration
from server.store.sqlite.schema import MIGRATIONS, SCHEMA_VERSION
from server.store.sqlite.store import SQLiteStore
from tests.harness import eventually


def item(task_id: str | None = None, status: Status = Status.SUCCEEDED) -> Incoming:
    task_id = task_id or str(uuid.uuid4())
    obs = Observation("seedance", task_id, status)
    return Incoming("seedance", task_id, "callback", json.dumps([task_id]).encode(), obs)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(database_url=f"sqlite:///{tmp_path}/taskhook.db", archive=False)


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[SQLiteStore]:
    async with SQLiteStore(settings) as s:
        assert isinstance(s, SQLiteStore)
        yield s


def sql(path: Path, statement: str) -> list[tuple]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(statement).fetchall()
    finally:
        conn.close()


# -- group commit ----------------------------------------------------------------------


async def test_concurrent_writes_share_commits(settings: Settings) -> None:
    sizes: list[int] = []
    async with SQLiteStore(settings, on_commit=lambda size, _: sizes.append(size)) as store:
        await asyncio.gather(*(store.ingest(item()) for _ in range(200)))
        assert await store.count_by_status() == {"succeeded": 200}
        assert len(sizes) < 200  # callbacks of one turn are one job (see test_coalesce)
        sizes.clear()
        regs = [[Registration("seedance", str(uuid.uuid4()))] for _ in range(200)]
        await asyncio.gather(*(store.register(r) for r in regs))  # a job each
        assert (await store.count_by_status())["pending"] == 200
    assert sum(sizes) >= 200
    assert max(sizes) > 1  # at least one group held several writes


async def test_a_failing_write_does_not_spoil_its_group(store: SQLiteStore) -> None:
    blocker = threading.Event()

    def hold(conn: sqlite3.Connection) -> None:
        blocker.wait(5)

    def fail(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO settings (key, value) VALUES ('k', '\"v\"')")
        raise ValueError("boom")

    held = asyncio.ensure_future(store._writer.run(hold))
    await asyncio.sleep(0)  # let the holder reach the writer first
    good = asyncio.ensure_future(store.ingest(item()))
    bad = asyncio.ensure_future(store._writer.run(fail))
    blocker.set()
    await held
    assert (await good).status == "succeeded"
    with pytest.raises(ValueError, match="boom"):
        await bad
    assert await store.get_value("k") is None  # the failing job's insert was rolled back


async def test_a_failing_write_in_a_group_without_savepoints(store: SQLiteStore) -> None:
    # Jobs that may run twice share a transaction with no savepoint each; when one
    # fails, the group runs again guarded: its neighbours commit, its own insert does not.
    blocker = threading.Event()
    runs: list[str] = []

    def put(key: str, fails: bool = False):  # noqa: ANN202
        def job(conn: sqlite3.Connection) -> str:
            runs.append(key)
            conn.execute("INSERT INTO settings (key, value) VALUES (?, '1')", (key,))
            if fails:
                raise ValueError("boom")
            return key

        return job

    holding = threading.Event()

    def hold(conn: sqlite3.Connection) -> None:
        holding.set()
        blocker.wait(5)

    held = asyncio.ensure_future(store._writer.run(hold))
    await eventually(holding.is_set, what="the writer held")  # the next three queue behind it
    good = asyncio.ensure_future(store._writer.run(put("a"), rerun=True))
    bad = asyncio.ensure_future(store._writer.run(put("b", fails=True), rerun=True))
    after = asyncio.ensure_future(store.ingest(item()))
    await eventually(lambda: store._writer.queued[0] == 4, what="the three jobs queued")
    blocker.set()
    await held
    assert await good == "a" and (await after).status == "succeeded"
    with pytest.raises(ValueError, match="boom"):
        await bad
    assert await store.get_value("a") == 1 and await store.get_value("b") is None
    assert runs == ["a", "b", "a", "b"]  # unguarded, then guarded


async def test_a_job_alone_fails_without_a_trace(store: SQLiteStore) -> None:
    def fail(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO settings (key, value) VALUES ('k', '1')")
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        await store._writer.run(fail)
    assert await store.get_value("k") is None
    assert (await store.ingest(item())).status == "succeeded"  # the writer goes on


async def test_reads_do_not_wait_behind_writes(store: SQLiteStore) -> None:
    await store.ingest(item())
    release = threading.Event()
    held = asyncio.ensure_future(store._writer.run(lambda conn: release.wait(10)))
    try:
        counts = await asyncio.wait_for(store.count_by_status(), 5)
        assert counts == {"succeeded": 1}
    finally:
        release.set()
        await held


# -- the file: WAL, versions, migrations -----------------------------------------------


async def test_schema_version_wal_and_reopen(settings: Settings) -> None:
    async with SQLiteStore(settings) as store:
        await store.register([Registration("seedance", "a-b-c")])
    assert sql(settings.database_path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert sql(settings.database_path, "PRAGMA journal_mode") == [("wal",)]
    async with SQLiteStore(settings) as store:
        record = await store.get_task("ABC")
        assert record is not None and record.state.task_id == "a-b-c"


async def test_a_newer_schema_is_refused(settings: Settings) -> None:
    settings.database_path.parent.mkdir(parents=True, exist_ok=True)
    sql(settings.database_path, f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    with pytest.raises(SchemaTooNew, match="upgrade taskhook"):
        await SQLiteStore(settings).open()


async def test_a_database_of_the_previous_version_opens_with_its_data(settings: Settings) -> None:
    """A file written before the outbox (version 3) migrates and keeps every row."""
    path = settings.database_path
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    for migration in MIGRATIONS[:3]:
        for statement in migration:
            conn.execute(statement)
    conn.execute("PRAGMA user_version=3")
    conn.execute("INSERT INTO leases (name, holder, expires_at) VALUES ('reconciler', 'old', 0)")
    conn.commit()
    conn.close()
    async with SQLiteStore(settings) as store:
        await store.register([Registration("seedance", "t1")])
        assert (await store.ingest(item("t1"))).events  # the outbox works at once
        term = await store.take_lease("reconciler", "new", ttl=30)
        assert term is not None and term >= 1  # the old row lapsed; its term rose
    assert sql(path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]


async def test_the_events_of_one_change_keep_one_copy_of_the_task(
    store: SQLiteStore, settings: Settings
) -> None:
    """The second event of a change stores no body: it points back to the first's."""
    outcome = await store.ingest(item("t1"))
    rows = sql(settings.database_path, "SELECT seq, id, type, length(body), data_back FROM events")
    (seq1, id1, type1, size1, back1), (seq2, id2, type2, size2, back2) = rows
    assert (id1, id2) == outcome.events and seq2 == seq1 + 1
    assert (back1, size2, back2) == (None, 0, 1) and size1 > 100
    first, second = (await store.events_after(None))[0]
    assert (first.type, second.type) == (type1, type2) == ("task.status_changed", "task.succeeded")
    one, two = json.loads(first.body), json.loads(second.body)
    assert one["type"] == type1 and two["type"] == type2
    assert one["timestamp"] == two["timestamp"] and one["data"] == two["data"]
    assert two["data"]["status"] == "succeeded"


async def test_an_event_written_before_version_10_is_read_as_written(
    store: SQLiteStore, settings: Settings
) -> None:
    """Events from before ``data_back`` carry their whole body; they read unchanged."""
    body = '{"type":"task.failed","timestamp":"2026-01-01T00:00:00Z","data":{"task_id":"old"}}'
    conn = sqlite3.connect(settings.database_path)
    conn.execute(
        "INSERT INTO events (id, type, task_key, provider, created_at, body)"
        " VALUES ('evt_old', 'task.failed', 'old', 'seedance', 1767225600, ?)",
        (body,),
    )
    conn.commit()
    conn.close()
    (event,), _ = await store.events_after(None)
    assert (event.id, event.type, event.body) == ("evt_old", "task.failed", body)


async def test_due_tasks_use_the_partial_index(store: SQLiteStore) -> None:
    rows = await store._fetchall(
        "EXPLAIN QUERY PLAN SELECT task_id FROM tasks WHERE next_check_at IS NOT NULL"
        " AND next_check_at <= ? ORDER BY next_check_at LIMIT 10",
        (0,),
    )
    plan = " ".join(str(r[-1]) for r in rows)
    assert "tasks_due" in plan and "SCAN tasks" not in plan


async def test_a_tasks_deliveries_are_found_by_the_one_index_of_deliveries(
    store: SQLiteStore, settings: Settings
) -> None:
    rows = await store._fetchall(
        "EXPLAIN QUERY PLAN SELECT id FROM deliveries WHERE task_key = ? ORDER BY id", ("k",)
    )
    plan = " ".join(str(r[-1]) for r in rows)
    assert "INDEX deliveries_body (task_key=?)" in plan and "SCAN deliveries" not in plan
    indexes = sql(settings.database_path, "PRAGMA index_list(deliveries)")
    assert sorted(row[1] for row in indexes) == ["deliveries_body"]


async def test_due_tasks_of_one_provider_use_their_partial_index(store: SQLiteStore) -> None:
    await store.register([Registration("seedance", f"t{i}") for i in range(20)])
    await store._writer.run(lambda c: c.execute("ANALYZE"))
    rows = await store._fetchall(
        "EXPLAIN QUERY PLAN SELECT task_id FROM tasks WHERE next_check_at IS NOT NULL"
        " AND next_check_at <= ? AND provider IN (?) ORDER BY next_check_at LIMIT 10",
        (0, "seedance"),
    )
    plan = " ".join(str(r[-1]) for r in rows)
    assert "tasks_due_provider" in plan and "SCAN tasks" not in plan, plan


async def test_the_feed_reads_by_the_primary_key(store: SQLiteStore) -> None:
    rows = await store._fetchall(
        "EXPLAIN QUERY PLAN SELECT seq FROM events WHERE seq > ? ORDER BY seq LIMIT 10", (0,)
    )
    plan = " ".join(str(r[-1]) for r in rows)
    assert "INTEGER PRIMARY KEY" in plan and "TEMP B-TREE" not in plan, plan


# -- how the writer fails ----------------------------------------------------------------


class Fatal(BaseException):
    """Stands for what kills a thread without being an Exception (MemoryError-like)."""


async def test_a_dead_writer_fails_every_write_fast(
    store: SQLiteStore, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = threading.Event()

    def die(conn: sqlite3.Connection) -> None:
        blocker.wait(5)
        raise Fatal("out of luck")

    dying = asyncio.ensure_future(store._writer.run(die))
    await asyncio.sleep(0)
    queued = asyncio.ensure_future(store.ingest(item()))  # waits behind the dying job
    await asyncio.sleep(0)
    with caplog.at_level(logging.CRITICAL, logger="taskhook.writer"):
        blocker.set()
        with pytest.raises(StoreUnavailable, match="Fatal: out of luck"):
            await asyncio.wait_for(dying, 10)
        with pytest.raises(StoreUnavailable):
            await asyncio.wait_for(queued, 10)
    with pytest.raises(StoreUnavailable) as later:
        await store.check_writable()
    assert later.value.http_status == 503
    assert [r.getMessage() for r in caplog.records if r.name == "taskhook.writer"] == [
        "database writer stopped: Fatal: out of luck; every write now fails"
    ]
    assert await store.count_by_status() == {}  # reads still answer


async def test_a_full_queue_refuses_at_once(settings: Settings) -> None:
    async with SQLiteStore(settings) as store:
        store._writer.max_jobs = 2
        release = threading.Event()
        held = asyncio.ensure_future(store._writer.run(lambda conn: release.wait(10)))
        await asyncio.sleep(0)
        waiting = [asyncio.ensure_future(store.ingest(item())) for _ in range(2)]
        await eventually(
            lambda: store._writer.queued[0] == 2, "the two callbacks queued as one job"
        )
        with pytest.raises(Overloaded) as refused:
            await store.ingest(item())
        assert refused.value.http_status == 503 and refused.value.code == "overloaded"
        assert refused.value.headers["Retry-After"] == "1"
        release.set()
        await held
        assert [(await w).status for w in waiting] == ["succeeded", "succeeded"]
        await store.ingest(item())  # room again


async def test_bytes_in_flight_are_bounded(settings: Settings) -> None:
    async with SQLiteStore(settings) as store:
        store._writer.max_bytes = 1000
        release = threading.Event()
        held = asyncio.ensure_future(store._writer.run(lambda conn: release.wait(10), size=1))
        await asyncio.sleep(0)
        big = Incoming("seedance", "big", "callback", b"x" * 2000, None)
        with pytest.raises(Overloaded):
            await store.ingest(big)
        assert store._writer.queued == (1, 1)
        release.set()
        await held
        assert store._writer.queued == (0, 0)
        await store.ingest(big)  # alone in an empty queue, however large: admitted


async def test_a_full_disk_answers_storage_full_and_logs_once(
    store: SQLiteStore, caplog: pytest.LogCaptureFixture
) -> None:
    await store.ingest(item())
    pages = (await store._fetchone("PRAGMA page_count"))[0]
    await store._writer.run(lambda c: c.execute(f"PRAGMA max_page_count={pages}"))
    big = [
        Incoming("seedance", f"t{i}", "callback", b"x" * 20000 + bytes([i]), None) for i in range(3)
    ]
    with caplog.at_level(logging.ERROR, logger="taskhook.writer"):
        for one in big:
            with pytest.raises(StorageFull) as full:
                await store.ingest(one)
    assert full.value.http_status == 503 and full.value.code == "storage_full"
    assert full.value.headers["Retry-After"] == "60"
    lines = [r for r in caplog.records if r.name == "taskhook.writer"]
    assert len(lines) == 1 and "disk is full" in lines[0].getMessage()
    assert lines[0].exc_info is None
    await store._writer.run(lambda c: c.execute("PRAGMA max_page_count=1073741823"))
    await store.ingest(big[0])  # space again: writes work again


async def test_the_checkpointer_moves_commits_into_the_database_file(store: SQLiteStore) -> None:
    """The writer does not checkpoint small WALs itself; the checkpointer thread does."""
    path = store.path
    before = path.stat().st_size
    await asyncio.gather(*(store.ingest(item()) for _ in range(200)))
    wal = path.with_name(path.name + "-wal")
    assert wal.stat().st_size > 0
    await eventually(lambda: path.stat().st_size > before, what="a checkpoint")
