"""End to end: ``POST /submit/{provider}`` on real servers against the fake upstream.

Two taskhook processes (``a`` and ``b``) share one SQLite file, as two
workers or replicas would; the fake upstream runs as its own process and
logs every creation call it receives (``GET /_fake/creations``), which is
what these tests read to know what taskhook sent and how often.
"""

from __future__ import annotations

import asyncio
import re
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from scripts.fake_upstream import FakeConfig
from scripts.fake_upstream_creations import CREATE_PATHS
from server.providers import NAMES

from .harness import (
    API_TOKEN,
    ROOT,
    ServerProcess,
    edit_sqlite,
    free_port,
    run_cli,
    wait_until,
)
from .payloads import CREATION_REQUESTS

pytestmark = [
    pytest.mark.e2e,
    # tests/harness.py leaves the child's log file handle to the garbage collector.
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
SUBMIT_TIMEOUT = 4.0
REQUESTS = CREATION_REQUESTS
PATHS = CREATE_PATHS


# -- processes ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fake_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The fake upstream as its own process (tasks finish 0.5 s after creation)."""
    port = free_port()
    log = tmp_path_factory.mktemp("fake") / "fake.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "scripts" / "fake_upstream.py"), "--port", str(port)]
            + ["--finish-after", "0.5", "--tick", "0.05", "--log-level", "warning"],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"the fake exited: {log.read_text()}")
        try:
            return httpx.get(f"{url}/_fake/stats", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(up, what="the fake upstream")
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def submit_env(fake: str, port: int, files: Path, **extra: str) -> dict[str, str]:
    env = {
        "ACEDATA_BASE_URL": fake,
        "SEEDANCE2_BASE_URL": fake,
        "ACEDATA_API_TOKEN": FakeConfig.acedata_token,
        "SEEDANCE2_API_KEY": FakeConfig.seedance2_key,
        "PUBLIC_URL": f"http://127.0.0.1:{port}",
        "SUBMIT_TIMEOUT": str(SUBMIT_TIMEOUT),
        "RECONCILER": "embedded",
        "RECONCILE_INTERVAL": "0.3",
        "RECONCILE_GRACE": "2",
        "ARCHIVE": "on",
        "ARCHIVE_DIR": str(files),
        "ARCHIVE_ALLOW_PRIVATE": "on",
    }
    env.update(extra)
    return env


def start(db: Path, fake: str, **extra: str) -> ServerProcess:
    port = free_port()
    env = submit_env(fake, port, db.parent / "files", **extra)
    return ServerProcess(db, env=env, port=port).start()


@pytest.fixture(scope="module")
def servers(
    fake_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    """Two taskhook processes on one database (two workers, or two replicas)."""
    db = tmp_path_factory.mktemp("submit") / "t.db"
    a = start(db, fake_url)
    try:
        b = start(db, fake_url)
        try:
            yield a, b
        finally:
            b.stop()
    finally:
        a.stop()


@pytest.fixture(scope="module")
def bare(fake_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """No Seedance 2.0 key; AceData's base URL is a closed port (connections refused)."""
    db = tmp_path_factory.mktemp("bare") / "t.db"
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))  # bound, never listening: every connection is refused
        server = start(
            db,
            fake_url,
            ACEDATA_BASE_URL=f"http://127.0.0.1:{closed.getsockname()[1]}",
            SEEDANCE2_API_KEY="",
            RECONCILER="off",
        )
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture
async def up(fake_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """The fake's control API, reset: no forced outcomes, no callback faults, an empty log."""
    async with httpx.AsyncClient(base_url=fake_url, timeout=10, trust_env=False) as client:
        for target in ("", *NAMES):
            body = {"clear": True, **({"provider": target} if target else {})}
            assert (await client.post("/_fake/creations", json=body)).status_code == 200
        await client.post("/_fake/creations", json={"clear_log": True})
        await client.post(
            "/_fake/callbacks", json={"drop": 0, "duplicate": 0, "reorder": 0, "empty_first": 0}
        )
        yield client


def api_client(server: ServerProcess) -> httpx.AsyncClient:
    """A client of ``server``'s API, signed in with the API token."""
    return httpx.AsyncClient(base_url=server.url, headers=AUTH, timeout=30, trust_env=False)


@pytest.fixture
async def a(servers: tuple[ServerProcess, ServerProcess]) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(servers[0]) as client:
        yield client


@pytest.fixture
async def b(servers: tuple[ServerProcess, ServerProcess]) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(servers[1]) as client:
        yield client


# -- helpers -----------------------------------------------------------------------------


async def calls(up: httpx.AsyncClient, provider: str | None = None) -> list[dict[str, Any]]:
    params = {"provider": provider} if provider else {}
    return (await up.get("/_fake/creations", params=params)).json()["calls"]


async def submit(
    api: httpx.AsyncClient,
    provider: str,
    *,
    key: str | None = None,
    metadata: dict[str, Any] | None = None,
    request: dict[str, Any] | None = None,
) -> httpx.Response:
    body: dict[str, Any] = {"request": request or REQUESTS[provider]}
    if metadata is not None:
        body["metadata"] = metadata
    headers = {"Idempotency-Key": key} if key else {}
    return await api.post(f"/submit/{provider}", json=body, headers=headers)


def cli_callback_url(server: ServerProcess, provider: str) -> str:
    """What ``python -m server callback-url PROVIDER`` prints with the server's settings."""
    done = run_cli(
        "callback-url", provider, env=server.env(), cwd=server.db_path.parent, check=True
    )
    return done.stdout.strip()


async def eventually(condition: Any, what: str, within: float = 30.0) -> Any:
    deadline = time.monotonic() + within
    while True:
        value = await condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up waiting for {what} after {within}s")
        await asyncio.sleep(0.05)


async def task(api: httpx.AsyncClient, task_id: str) -> dict[str, Any] | None:
    answer = await api.get(f"/tasks/{task_id}")
    return answer.json() if answer.status_code == 200 else None


async def sources(api: httpx.AsyncClient, task_id: str) -> list[str]:
    answer = (await api.get(f"/tasks/{task_id}/deliveries")).json()
    return [d["source"] for d in answer["deliveries"]]


async def task_count(api: httpx.AsyncClient) -> int:
    return len((await api.get("/tasks", params={"limit": 500})).json()["tasks"])


def submit_id(answer: httpx.Response) -> int:
    match = re.search(r"submit (\d+)", answer.json()["error"]["message"])
    assert match, answer.text
    return int(match.group(1))


def unique(label: str) -> str:
    return f"{label}-{time.time_ns()}"


# -- the creation call -------------------------------------------------------------------


@pytest.mark.parametrize("provider", NAMES)
async def test_the_creation_call_has_the_path_token_body_and_callback_url(
    provider: str, servers: tuple[ServerProcess, ServerProcess], a: httpx.AsyncClient, up
) -> None:
    await up.post("/_fake/creations", json={"finish_after": 60})  # no callback during the test
    answer = await submit(a, provider, metadata={"order": 42})
    assert answer.status_code == 201, answer.text
    [call] = await calls(up)
    assert call["path"] == PATHS[provider] and call["provider"] == provider
    assert call["authorized"] is True  # the fake checked the bearer against the provider's token
    assert FakeConfig.acedata_token not in str(call) and FakeConfig.seedance2_key not in str(call)
    if provider == "seedance2":
        assert call["body"] == REQUESTS[provider]  # no callback: the reconciler polls
    else:
        own_url = cli_callback_url(servers[0], provider)
        assert own_url.startswith(f"{servers[0].url}/callbacks/{provider}/")
        assert call["body"] == {**REQUESTS[provider], "callback_url": own_url, "async": True}
    created = answer.json()
    assert created["task_id"] == call["task_id"]
    assert (
        created["trace_id"] == call["trace_id"]
    )  # AceData's answer carries one, Seedance 2.0's not
    assert (created["provider"], created["status"], created["metadata"]) == (
        provider,
        "pending",
        {"order": 42},
    )
    assert created["last_source"] == "submit"
    assert await task(a, created["task_id"]) is not None  # committed before the 201
    kept = await sources(a, created["task_id"])  # the reconciler may have asked since
    assert kept[0] == "submit" and "callback" not in kept


async def test_a_submitted_task_is_tracked_to_its_archived_result(a: httpx.AsyncClient, up) -> None:
    """The README walkthrough: one submit, then only reading."""
    created = (await submit(a, "seedance", metadata={"user": "u-1"})).json()

    async def archived() -> dict[str, Any] | None:
        found = await task(a, created["task_id"])
        done = found and found["status"] == "succeeded"
        return found if done and all("archived" in r for r in found["results"]) else None

    final = await eventually(archived, "the task to succeed and its video to be archived")
    assert final["metadata"] == {"user": "u-1"}
    copy = await a.get(final["results"][0]["archived"]["url"])
    assert copy.status_code == 200 and copy.headers["content-type"] == "video/mp4"
    assert (await sources(a, created["task_id"]))[0] == "submit"


# -- idempotency -------------------------------------------------------------------------


async def test_the_same_key_answers_the_first_answer_without_calling_upstream_again(
    a: httpx.AsyncClient, b: httpx.AsyncClient, up
) -> None:
    key = unique("same")
    first = await submit(a, "seedream", key=key, metadata={"n": 1})
    again = await submit(a, "seedream", key=key, metadata={"n": 1})
    elsewhere = await submit(b, "seedream", key=key, metadata={"n": 1})
    assert first.status_code == again.status_code == elsewhere.status_code == 201
    assert first.content == again.content == elsewhere.content
    assert "idempotent-replayed" not in first.headers
    assert (
        again.headers["idempotent-replayed"] == elsewhere.headers["idempotent-replayed"] == "true"
    )
    assert len(await calls(up)) == 1


async def test_without_a_key_each_submit_creates_a_task(a: httpx.AsyncClient, up) -> None:
    one, two = [await submit(a, "seedream") for _ in "12"]
    assert one.status_code == two.status_code == 201
    assert one.json()["task_id"] != two.json()["task_id"]
    assert len(await calls(up)) == 2


async def test_the_same_key_with_another_body_is_422(a: httpx.AsyncClient, up) -> None:
    key = unique("other-body")
    assert (await submit(a, "seedance", key=key, metadata={"n": 1})).status_code == 201
    other = await submit(a, "seedance", key=key, metadata={"n": 2})
    assert other.status_code == 422
    assert other.json()["error"]["code"] == "idempotency_key_reused"
    assert len(await calls(up)) == 1


async def test_the_same_key_in_flight_in_another_process_is_409(
    a: httpx.AsyncClient, b: httpx.AsyncClient, up
) -> None:
    key = unique("in-flight")
    await up.post("/_fake/creations", json={"next": [{"outcome": "hang", "seconds": 2}]})
    first = asyncio.create_task(submit(a, "seedance", key=key))

    async def sent() -> bool:
        return len(await calls(up)) == 1

    await eventually(sent, "the first creation call to reach upstream")
    meanwhile = await submit(b, "seedance", key=key)
    assert meanwhile.status_code == 409
    assert meanwhile.json()["error"]["code"] == "submit_in_progress"
    answered = await first
    assert answered.status_code == 201
    after = await submit(b, "seedance", key=key)
    assert (after.status_code, after.content) == (201, answered.content)
    assert len(await calls(up)) == 1


# -- every error mapping -----------------------------------------------------------------

ERRORS = [
    # (forced outcome, our status, our code, key usable again)
    (
        {"outcome": "400", "code": "bad_request", "message": "model is invalid."},
        400,
        "bad_request",
        True,
    ),
    (
        {"outcome": "422", "code": "invalid_request", "message": "prompt is required"},
        400,
        "invalid_request",
        True,
    ),
    ({"outcome": "429", "retry_after": 7}, 429, "rate_limited", True),
    ({"outcome": "429", "retry_after": None}, 429, "rate_limited", True),
    ("401", 502, "upstream_unauthorized", True),
    ("403", 502, "upstream_unauthorized", True),
    ("500", 502, "upstream_error", True),
    ({"outcome": "close", "create": False}, 504, "submit_outcome_unknown", False),
]


@pytest.mark.parametrize(
    ("forced", "status", "code", "reusable"),
    ERRORS,
    ids=[str(e[0]) if isinstance(e[0], str) else "-".join(map(str, e[0].values())) for e in ERRORS],
)
@pytest.mark.parametrize("provider", ["seedream", "seedance2"])
async def test_upstream_errors_map_and_register_nothing(
    provider: str,
    forced: Any,
    status: int,
    code: str,
    reusable: bool,
    a: httpx.AsyncClient,
    up,
) -> None:
    await up.post("/_fake/creations", json={"provider": provider, "next": [forced]})
    before = await task_count(a)
    key = unique("error")
    answer = await submit(a, provider, key=key)
    assert answer.status_code == status, answer.text
    assert set(answer.json()) == {"error"} and answer.json()["error"]["code"] == code
    if isinstance(forced, dict) and forced.get("message"):
        assert answer.json()["error"]["message"] == forced["message"]
    if status == 429:
        expected = "7" if forced["retry_after"] == 7 else "30"  # upstream's, or the default
        assert answer.headers["retry-after"] == expected
    if status == 502 and forced in ("401", "403"):
        setting = "SEEDANCE2_API_KEY" if provider == "seedance2" else "ACEDATA_API_TOKEN"
        assert setting in answer.json()["error"]["message"]
    assert await task_count(a) == before  # nothing registered for a refused creation
    [call] = await calls(up)
    assert call["task_id"] is None  # and upstream created nothing either
    retry = await submit(a, provider, key=key)
    if reusable:
        assert retry.status_code == 201 and len(await calls(up)) == 2
    else:
        assert (retry.status_code, retry.content) == (status, answer.content)
        assert len(await calls(up)) == 1


async def test_a_hanging_upstream_gives_504_after_submit_timeout_and_one_call(
    a: httpx.AsyncClient, up
) -> None:
    await up.post("/_fake/creations", json={"next": [{"outcome": "hang", "seconds": 30}]})
    key = unique("hang")
    answer = await submit(a, "seedream", key=key)
    assert answer.status_code == 504
    assert answer.json()["error"]["code"] == "submit_outcome_unknown"
    assert "timed out" in answer.json()["error"]["message"]

    async def given_up() -> bool:
        return (await calls(up))[0]["client_gone"] is True

    await eventually(given_up, "the fake to see taskhook hang up")
    again = await submit(a, "seedream", key=key)
    assert (again.status_code, again.content) == (504, answer.content)
    assert len(await calls(up)) == 1  # never resent, neither by taskhook nor through the key
    record = (await a.get(f"/submits/{submit_id(answer)}")).json()
    assert (record["state"], record["status"], record["idempotency_key"]) == (
        "answered",
        504,
        key,
    )
    assert record["answer"] == answer.json()
    waited = _seconds(record["answered_at"]) - _seconds(record["created_at"])
    assert waited >= SUBMIT_TIMEOUT - 0.01  # it gave up at SUBMIT_TIMEOUT, not before


def _seconds(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


async def test_a_cut_answer_after_upstream_created_the_task_is_504_and_its_callback_tracks_it(
    a: httpx.AsyncClient, up
) -> None:
    await up.post("/_fake/creations", json={"next": [{"outcome": "close", "create": True}]})
    answer = await submit(a, "seedance", metadata={"lost": True})
    assert answer.status_code == 504
    [call] = await calls(up)
    record = (await a.get(f"/submits/{submit_id(answer)}")).json()
    assert record["status"] == 504 and record["task_id"] is None

    async def called_back() -> dict[str, Any] | None:
        found = await task(a, call["task_id"])
        return found if found and found["status"] == "succeeded" else None

    # taskhook did not learn the id, but the task carries taskhook's callback URL.
    assert (await eventually(called_back, "the task's callback"))["last_source"] == "callback"


async def test_no_token_is_503_naming_the_setting_and_sends_nothing(
    bare: ServerProcess, up
) -> None:
    async with api_client(bare) as api:
        answer = await submit(api, "seedance2", key=unique("no-token"))
        assert answer.status_code == 503
        assert answer.json()["error"]["code"] == "provider_not_configured"
        assert "SEEDANCE2_API_KEY" in answer.json()["error"]["message"]
        assert await calls(up) == []


async def test_a_refused_connection_is_502_and_registers_nothing(bare: ServerProcess) -> None:
    async with api_client(bare) as api:
        answer = await submit(api, "seedream")
        assert answer.status_code == 502
        assert answer.json()["error"]["code"] == "upstream_unreachable"
        assert await task_count(api) == 0


@pytest.mark.parametrize(
    ("path", "kwargs", "status", "code"),
    [
        ("/submit/midjourney", {"json": {"request": {"prompt": "p"}}}, 404, "not_found"),
        ("/submit/seedream", {"content": b"{nope"}, 400, "not_json"),
        ("/submit/seedream", {"json": ["request"]}, 400, "invalid_submit"),
        ("/submit/seedream", {"json": {"request": {}}}, 400, "invalid_submit"),
        ("/submit/seedream", {"json": {"request": "a cat"}}, 400, "invalid_submit"),
        ("/submit/seedream", {"json": {"request": {"p": 1}, "meta": {}}}, 400, "invalid_submit"),
        ("/submit/seedream", {"json": {"request": {"p": 1}, "metadata": [1]}}, 400, None),
        (
            "/submit/seedream",
            {"json": {"request": {"p": 1}}, "headers": {"Idempotency-Key": "x" * 256}},
            400,
            "invalid_idempotency_key",
        ),
        (
            "/submit/seedream",
            {"json": {"request": {"p": 1}}, "headers": {"Authorization": ""}},
            401,
            "unauthorized",
        ),
    ],
)
async def test_bad_requests_are_refused_before_anything_is_sent(
    path: str, kwargs: dict, status: int, code: str | None, a: httpx.AsyncClient, up
) -> None:
    answer = await a.post(path, **kwargs)
    assert answer.status_code == status, answer.text
    assert set(answer.json()["error"]) == {"code", "message"}
    if code:
        assert answer.json()["error"]["code"] == code
    assert await calls(up) == []


# -- lost callbacks, races, crashes ------------------------------------------------------


@pytest.mark.parametrize("provider", ["seedance", "seedance2"])
async def test_a_submitted_task_whose_callback_never_comes_is_completed_by_the_reconciler(
    provider: str, a: httpx.AsyncClient, up
) -> None:
    await up.post("/_fake/callbacks", json={"drop": 1})
    created = (await submit(a, provider)).json()

    async def succeeded() -> dict[str, Any] | None:
        found = await task(a, created["task_id"])
        return found if found and found["status"] == "succeeded" else None

    await eventually(succeeded, "the reconciler to complete the task")
    kept = await sources(a, created["task_id"])
    assert kept[0] == "submit" and "reconcile" in kept and "callback" not in kept


async def test_a_callback_before_the_answer_keeps_the_task_and_adds_the_metadata(
    a: httpx.AsyncClient, up
) -> None:
    await up.post("/_fake/creations", json={"finish_after": 0})
    await up.post("/_fake/creations", json={"next": [{"outcome": "hang", "seconds": 3}]})
    pending = asyncio.create_task(submit(a, "seedance", metadata={"who": "race"}))

    async def created_upstream() -> str | None:
        log = await calls(up)
        return log[0]["task_id"] if log else None

    task_id = await eventually(created_upstream, "upstream to create the task")

    async def called_back() -> dict[str, Any] | None:
        found = await task(a, task_id)
        return found if found and found["status"] == "succeeded" else None

    early = await eventually(called_back, "the callback, before upstream's answer")
    assert not pending.done() and early["metadata"] == {}
    answer = await pending
    assert answer.status_code == 201
    final = answer.json()
    assert (final["task_id"], final["status"], final["metadata"]) == (
        task_id,
        "succeeded",
        {"who": "race"},
    )
    assert [r["url"] for r in final["results"]] == [r["url"] for r in early["results"]]
    assert final["completed_at"] == early["completed_at"]
    assert await sources(a, task_id) == ["callback", "submit"]


async def test_a_process_killed_during_the_call_leaves_a_key_that_never_creates_again(
    fake_url: str, tmp_path: Path, up
) -> None:
    await up.post("/_fake/creations", json={"next": [{"outcome": "hang", "seconds": 60}]})
    server = start(tmp_path / "t.db", fake_url, RECONCILER="off")
    key = unique("killed")
    try:
        async with api_client(server) as api:
            doomed = asyncio.create_task(submit(api, "seedream", key=key))

            async def sent() -> bool:
                return len(await calls(up)) == 1

            await eventually(sent, "the creation call to reach upstream")
            server.kill()
            with pytest.raises(httpx.TransportError):
                await doomed
        server.start()
        async with api_client(server) as api:
            waiting = await submit(api, "seedream", key=key)
            assert waiting.status_code == 409  # the record is in the database, still in flight
            # Standing in for SUBMIT_TIMEOUT + 30 s passing: the record lapses.
            edit_sqlite(server.db_path, "UPDATE submits SET lapses_at = 0")
            lapsed = await submit(api, "seedream", key=key)
            assert lapsed.status_code == 504
            assert lapsed.json()["error"]["code"] == "submit_outcome_unknown"
            assert len(await calls(up)) == 1
    finally:
        server.stop()


async def test_openapi_documents_submit(a: httpx.AsyncClient) -> None:
    schema = (await a.get("/openapi.json")).json()
    operation = schema["paths"]["/submit/{provider}"]["post"]
    assert operation["security"] == [{"bearer": []}]
    assert {"201", "400", "404", "409", "422", "429", "502", "503", "504"} <= set(
        operation["responses"]
    )
    assert "get" in schema["paths"]["/submits/{submit_id}"]
