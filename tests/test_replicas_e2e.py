"""Three replicas on one PostgreSQL database, end to end.

Three real ``python -m server`` processes (uvicorn on loopback) share one
scratch PostgreSQL database, with the fake upstream as its own process. What
the replicas do to the outside world is watched from outside, by a witness in
front of the fake: each replica polls upstream with a token of its own, so
every reconcile call says which replica made it and when; result files pass
through it, and it counts the downloads of each file going on at once.
Webhooks go to a receiving app that verifies each one with ``standardwebhooks``
and counts the attempts of each event going on at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import re
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from scripts.fake_upstream import FakeConfig
from server.core.ids import task_key
from server.store.postgres.schema import SCHEMA_VERSION

from .delivery.receiver import Receiver
from .harness import ServerProcess, eventually, fake_upstream, free_port, wait_until
from .payloads import dumps, seedance

pytestmark = [
    pytest.mark.e2e,
    # tests/harness.py leaves the child's log file handle to the garbage collector.
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]

REPLICAS = 3
#: RECONCILE_INTERVAL: long enough that a busy machine's scheduling noise is small beside it.
INTERVAL = 2.0
#: A download or a webhook attempt takes this long, so two at once could not go unseen.
HOLD = 0.15
TASKS = 120
#: Tasks whose callbacks go out before the lease holder has polled upstream (of TASKS).
EARLY = 40
#: Callbacks acknowledged after that before the holder is killed, mid-pass and mid-load.
KILL_AFTER = 30
ARCHIVE_CONCURRENCY = 4
DELIVERY_CONCURRENCY = 8
PUBLIC_URL = "http://taskhook.test"  # the load balancer's address, the same for every replica


@contextlib.contextmanager
def serving(app: Starlette) -> Iterator[str]:
    """``app`` under uvicorn in a thread on a free loopback port; yields its base URL."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, 10, what="the witness to start")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


async def hung_up(request: Request) -> None:
    """Returns when the client closed the connection (its body was read already)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


@dataclass
class Witness:
    """The fake upstream's task endpoint and file server, as the replicas reach them."""

    fake: str
    url: str = ""
    #: (replica's token, start, end) of every reconcile call, on this process's clock.
    calls: list[tuple[str, float, float]] = field(default_factory=list)
    downloading: Counter[str] = field(default_factory=Counter)
    most_at_once: Counter[str] = field(default_factory=Counter)
    downloads: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)
    client: httpx.AsyncClient = field(init=False)

    async def tasks(self, request: Request) -> Response:
        """AceData's tasks endpoint, forwarded to the fake with the fake's token.

        A call ends when its answer is sent or when the replica hangs up (killed, or
        its pass cancelled), whichever comes first.
        """
        start = time.monotonic()
        replica = request.headers.get("authorization", "").removeprefix("Bearer ")
        forward = asyncio.ensure_future(
            self.client.post(
                f"{self.fake}/{request.path_params['service']}/tasks",
                content=await request.body(),
                headers={
                    "Authorization": f"Bearer {FakeConfig.acedata_token}",
                    "Content-Type": "application/json",
                },
            )
        )
        gone = asyncio.ensure_future(hung_up(request))
        await asyncio.wait({forward, gone}, return_when=asyncio.FIRST_COMPLETED)
        with self.lock:
            self.calls.append((replica, start, time.monotonic()))
        gone.cancel()
        if not forward.done():
            forward.cancel()
            return Response(status_code=499)
        answer = forward.result()
        return Response(answer.content, answer.status_code, media_type="application/json")

    async def files(self, request: Request) -> Response:
        """The fake's file, held a moment while it counts as being downloaded."""
        name = request.path_params["name"]
        with self.lock:
            self.downloads[name] += 1
            self.downloading[name] += 1
            self.most_at_once[name] = max(self.most_at_once[name], self.downloading[name])
        try:
            await asyncio.sleep(HOLD)
            answer = await self.client.get(f"{self.fake}/files/{name}")
            return Response(answer.content, answer.status_code, media_type="video/mp4")
        finally:
            with self.lock:
                self.downloading[name] -= 1

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        async with httpx.AsyncClient(timeout=30) as self.client:
            yield

    @contextlib.contextmanager
    def serve(self) -> Iterator[Witness]:
        routes = [
            Route("/{service}/tasks", self.tasks, methods=["POST"]),
            Route("/files/{name}", self.files, methods=["GET"]),
        ]
        with serving(Starlette(routes=routes, lifespan=self.lifespan)) as url:
            self.url = url
            yield self


@dataclass
class CountingReceiver(Receiver):
    """The webhook receiver, counting the attempts of each event under way at once."""

    under_way: Counter[str] = field(default_factory=Counter)
    most_at_once: Counter[str] = field(default_factory=Counter)

    async def _handle(self, request: Request) -> Response:
        event_id = request.headers.get("webhook-id", "")
        with self._lock:
            self.under_way[event_id] += 1
            self.most_at_once[event_id] = max(self.most_at_once[event_id], self.under_way[event_id])
        try:
            await asyncio.sleep(HOLD)
            return await super()._handle(request)
        finally:
            with self._lock:
                self.under_way[event_id] -= 1


# -- processes ----------------------------------------------------------------------------


@pytest.fixture
def fake() -> Iterator[str]:
    """The fake upstream as its own process (each task call answered after 20 ms)."""
    with fake_upstream("--file-bytes=100000", "--latency=0.02", "--tick=0.05") as url:
        yield url


@pytest.fixture
def witness(fake: str) -> Iterator[Witness]:
    with Witness(fake).serve() as w:
        yield w


@pytest.fixture
def receiver() -> Iterator[CountingReceiver]:
    with CountingReceiver().serve() as r:
        yield r


def replica_env(database: str, witness: Witness, files: Path, k: int) -> dict[str, str]:
    return {
        "DATABASE_URL": database,
        "DATABASE_POOL_SIZE": "4",
        # Neither secret configured: the first replica generates them, the others read them.
        "API_TOKEN": "",
        "CALLBACK_SECRETS": "",
        "PUBLIC_URL": PUBLIC_URL,
        "RECONCILER": "embedded",
        "RECONCILE_INTERVAL": str(INTERVAL),
        "RECONCILE_GRACE": "0",
        "RECONCILE_BATCH_SIZE": "1",  # a call per task: a pass is a long run of calls
        "ACEDATA_BASE_URL": witness.url,
        "ACEDATA_API_TOKEN": f"replica-{k}",  # the witness tells the replicas apart by it
        "ARCHIVE": "on",
        "ARCHIVE_DIR": str(files),  # one folder for all: a network volume on one host
        "ARCHIVE_ALLOW_PRIVATE": "on",
        "ARCHIVE_CONCURRENCY": str(ARCHIVE_CONCURRENCY),
        "DELIVERY": "on",
        "DELIVERY_RETRY_SCHEDULE": "0,0.5,0.5,1,2",
        "DELIVERY_TIMEOUT": "5",
        "DELIVERY_CONCURRENCY": str(DELIVERY_CONCURRENCY),
    }


@pytest.fixture
def replicas(tmp_path: Path, pg_databases, witness: Witness) -> Iterator[list[ServerProcess]]:
    """Three replicas started at once on a database without even the schema."""
    database = pg_databases.blank()
    servers = [
        ServerProcess(
            tmp_path / "unused.db", env=replica_env(database, witness, tmp_path / "files", k)
        )
        for k in range(REPLICAS)
    ]
    try:
        for server in servers:
            server.start(wait=False)
        for server in servers:
            server.wait_ready(60)
        yield servers
    finally:
        for server in servers:
            server.stop()


def database_of(server: ServerProcess) -> str:
    return server.extra_env["DATABASE_URL"]


def command(server: ServerProcess, *args: str) -> str:
    """``python -m server ARGS`` with the replica's settings; its standard output."""
    done = subprocess.run(
        [sys.executable, "-m", "server", *args],
        cwd=server.db_path.parent,
        env=server.env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def sql(server: ServerProcess, query: str, params: tuple = ()) -> list[tuple]:
    with psycopg.connect(database_of(server), autocommit=True) as conn:
        return conn.execute(query, params).fetchall()


# -- (b) one set of secrets --------------------------------------------------------------


def test_replicas_started_at_once_share_one_schema_and_one_set_of_secrets(replicas):
    shown = command(replicas[0], "secrets", "show")
    token = re.search(r"^API_TOKEN=(\S+)$", shown, re.M)
    assert token is not None, shown
    callback_url = command(replicas[1], "callback-url", "seedance").strip().splitlines()[-1]
    assert callback_url.startswith(f"{PUBLIC_URL}/callbacks/seedance/")
    path = callback_url.removeprefix(PUBLIC_URL)

    for server in replicas:
        assert command(server, "secrets", "show") == shown
        bearer = {"Authorization": f"Bearer {token.group(1)}"}
        assert httpx.get(f"{server.url}/tasks", headers=bearer).status_code == 200
        wrong = {"Authorization": "Bearer not-the-token"}
        assert httpx.get(f"{server.url}/tasks", headers=wrong).status_code == 401
        task_id = str(uuid.uuid4())
        answer = httpx.post(server.url + path, content=dumps(seedance(task_id, status="queued")))
        assert answer.status_code == 200, answer.text
        assert httpx.get(f"{server.url}/tasks/{task_id}", headers=bearer).status_code == 200

    # Generated once, by one of them; migrated once (one row per migration).
    banners = [s.logs().count("generated secrets") for s in replicas]
    assert sorted(banners) == [0, 0, 1], banners
    assert sql(replicas[0], "SELECT version FROM taskhook_schema") == [(SCHEMA_VERSION,)]


# -- (a), (c), (d): load, the lease holder killed in the middle ----------------------------


@dataclass
class Sent:
    task_id: str
    body: bytes
    replica: int
    acknowledged: bool


def lease_row(server: ServerProcess) -> tuple[str, int] | None:
    """(holder, term) of the reconciler's lease while someone holds it."""
    rows = sql(
        server,
        "SELECT holder, term FROM leases WHERE name = 'reconciler'"
        " AND expires_at >= extract(epoch FROM clock_timestamp())",
    )
    return (str(rows[0][0]), int(rows[0][1])) if rows and rows[0][0] else None


def holder_pid(holder: str) -> int:
    return int(holder.split(":")[-2])  # host:pid:random (server.service.holder_id)


async def send_callbacks(
    replicas: list[ServerProcess],
    path: str,
    witness: Witness,
    armed: asyncio.Event,
    kill: asyncio.Event,
) -> list[Sent]:
    """About 320 callbacks over the replicas, 16 at a time: per task a ``processing`` one and
    its byte-identical repeat to two replicas at once, then (for 80 of the 120) ``succeeded``
    with a result file. The tasks after the first EARLY wait for ``armed``; ``kill`` is set
    once KILL_AFTER callbacks more were acknowledged after it."""
    sent: list[Sent] = []
    gate = asyncio.Semaphore(16)
    clients = [httpx.AsyncClient(base_url=s.url, timeout=30) for s in replicas]
    rng = random.Random(13)
    since_armed: list[int] = []

    async def post(task_id: str, body: bytes, replica: int) -> None:
        try:
            answer = await clients[replica].post(path, content=body)
            ok = answer.status_code == 200
        except httpx.HTTPError:
            ok = False  # refused or cut off: not acknowledged, so upstream would retry it
        sent.append(Sent(task_id, body, replica, ok))
        if ok and armed.is_set():
            since_armed.append(1)
            if len(since_armed) >= KILL_AFTER:
                kill.set()

    async def one_task(n: int) -> None:
        task_id = str(uuid.UUID(int=rng.getrandbits(128)))
        first, second, third = rng.sample(range(REPLICAS), 3)
        if n >= EARLY:
            await armed.wait()
        async with gate:
            processing = dumps(seedance(task_id, status="processing", video=False))
            await asyncio.gather(
                post(task_id, processing, first), post(task_id, processing, second)
            )
            if n % 3:
                done = seedance(task_id, status="succeeded")
                done["data"]["video_url"] = f"{witness.url}/files/{task_key(task_id)}.mp4"
                await post(task_id, dumps(done), third)

    try:
        await asyncio.gather(*(one_task(n) for n in range(TASKS)))
    finally:
        for client in clients:
            await client.aclose()
    return sent


async def test_three_replicas_under_load_with_the_lease_holder_killed(replicas, witness, receiver):
    servers = replicas
    token = re.search(r"^API_TOKEN=(\S+)$", command(servers[0], "secrets", "show"), re.M)
    assert token is not None
    bearer = {"Authorization": f"Bearer {token.group(1)}"}
    path = command(servers[0], "callback-url", "seedance").strip().removeprefix(PUBLIC_URL)
    async with httpx.AsyncClient(base_url=servers[1].url, headers=bearer) as api:
        created = await api.post("/endpoints", json={"url": receiver.url})
    assert created.status_code == 201, created.text
    receiver.secrets.append(created.json()["secret"])

    first = await eventually(lambda: lease_row(servers[0]), "a lease holder", within=30)
    holder = next(s for s in servers if s.proc and s.proc.pid == holder_pid(first[0]))
    survivors = [s for s in servers if s is not holder]

    armed, kill = asyncio.Event(), asyncio.Event()
    load = asyncio.create_task(send_callbacks(servers, path, witness, armed, kill))
    # Killed in the middle of a pass: once it has polled upstream a few times.
    holder_token = f"replica-{servers.index(holder)}"
    await eventually(
        lambda: sum(c[0] == holder_token for c in witness.calls) >= 3, "a pass", within=30
    )
    armed.set()
    await asyncio.wait({load, asyncio.create_task(kill.wait())}, return_when="FIRST_COMPLETED")
    assert kill.is_set(), "the load ended before the kill"
    holder.kill()
    killed_at = time.monotonic()

    # (c) Another replica holds the lease within 3 intervals of the holder's death.
    def moved() -> tuple[str, int] | None:
        row = lease_row(survivors[0])
        return row if row and row[0] != first[0] else None

    second = await eventually(moved, "the lease to move", within=3 * INTERVAL)
    assert time.monotonic() - killed_at <= 3 * INTERVAL
    assert second[1] > first[1]
    assert holder_pid(second[0]) in {s.proc.pid for s in survivors if s.proc}

    sent = await load
    acknowledged = [s for s in sent if s.acknowledged]
    assert len(acknowledged) >= KILL_AFTER * 2
    assert any(not s.acknowledged for s in sent if s.replica == servers.index(holder))

    # (a) Every acknowledged callback is in the database, and the task as served says so.
    stored = set(sql(survivors[0], "SELECT task_key, sha256 FROM deliveries"))
    for s in acknowledged:
        assert (task_key(s.task_id), hashlib.sha256(s.body).hexdigest()) in stored, s
    finished = {s.task_id for s in acknowledged if b'"succeeded"' in s.body}
    async with httpx.AsyncClient(base_url=survivors[1].url, headers=bearer) as api:
        for task_id in finished:
            task = (await api.get(f"/tasks/{task_id}")).json()
            assert task["status"] == "succeeded", task

        # (d) Every finished task's file is archived, each downloaded by one replica at a time.
        def all_archived() -> bool:
            rows = sql(survivors[0], "SELECT task_key FROM archives WHERE status = 'done'")
            return {task_key(t) for t in finished} <= {k for (k,) in rows}

        await eventually(all_archived, "every file archived", within=90)
        assert set(witness.most_at_once.values()) == {1}, witness.most_at_once
        again = [name for name, n in witness.downloads.items() if n > 1]
        assert len(again) <= ARCHIVE_CONCURRENCY, again  # only the dead replica's claims

        # (d) Every committed event arrives, verified; no attempt of one made twice at once.
        events = await committed_events(api)
        await eventually(
            lambda: {e["id"] for e in events} <= {d.event_id for d in receiver.accepted()},
            "every event delivered",
            within=90,
        )
    assert set(receiver.most_at_once.values()) == {1}, receiver.most_at_once
    arrivals = Counter(d.event_id for d in receiver.accepted())
    assert len([i for i, n in arrivals.items() if n > 1]) <= DELIVERY_CONCURRENCY

    # (c) One pass at a time: no reconcile call of one replica overlaps one of another, and
    # the caller changes only when the lease changed hands (a new term).
    calls = sorted(witness.calls, key=lambda c: c[1])
    assert {c[0] for c in calls} >= {f"replica-{servers.index(holder)}"}
    ended: dict[str, float] = {}
    for replica, start, end in calls:
        for other, last in ended.items():
            assert other == replica or last <= start, (other, last, replica, start, calls)
        ended[replica] = max(end, ended.get(replica, 0.0))
    print(
        "DEBUG",
        len(sent),
        len(acknowledged),
        "handover",
        second,
        first,
        "calls",
        Counter(c[0] for c in calls),
        "downloads",
        sum(witness.downloads.values()),
        len(witness.downloads),
        again,
        "events",
        len(events),
        len(arrivals),
        [i for i, n in arrivals.items() if n > 1],
        "finished",
        len(finished),
    )
    switches = sum(1 for a, b in zip(calls, calls[1:], strict=False) if a[0] != b[0])
    last = lease_row(survivors[0])
    assert last is not None and 1 <= switches <= last[1] - first[1]


async def committed_events(api: httpx.AsyncClient) -> list[dict]:
    items: list[dict] = []
    cursor = None
    while True:
        page = (await api.get("/events", params={"after": cursor, "limit": 1000})).json()
        items += page["items"]
        cursor = page["next_cursor"]
        if not page["items"]:
            return items
