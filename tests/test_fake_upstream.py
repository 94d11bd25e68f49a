"""The fake upstream answers in the upstream documents' shapes and misbehaves on request."""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import scripts.fake_upstream as fu
import scripts.fake_upstream_payloads as payloads
from scripts.fake_upstream_creations import CREATE_PATHS
from tests.harness import eventually
from tests.payloads import CREATION_REQUESTS

TOKEN, KEY = "ace-token", "s2-key"
ACE = {"authorization": f"Bearer {TOKEN}"}
S2 = {"authorization": f"Bearer {KEY}"}
WRAPPER_KEYS = {"_id", "id", "api_id", "application_id", "created_at", "credential_id"}
WRAPPER_KEYS |= {"request", "trace_id", "type", "user_id", "response"}


def config(**changes: Any) -> fu.FakeConfig:
    base: dict[str, Any] = {"acedata_token": TOKEN, "seedance2_key": KEY, "finish_after": 600}
    return fu.FakeConfig(**{"seed": 1, **base, **changes})


@asynccontextmanager
async def fake(cfg: fu.FakeConfig | None = None) -> AsyncIterator[tuple[fu.FakeState, Any]]:
    app = fu.create_app(cfg or config())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://fake") as client:
            yield app.state.fake, client


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with fake() as (_, c):
        yield c


async def create(c: httpx.AsyncClient, **spec: Any) -> dict[str, Any]:
    answer = await c.post("/_fake/tasks", json=spec)
    assert answer.status_code == 201, answer.text
    return answer.json()


async def ask(c: httpx.AsyncClient, service: str, **body: Any) -> httpx.Response:
    return await c.post(f"/{service}/tasks", json={"action": "retrieve", **body}, headers=ACE)


async def test_seedream_retrieve_has_the_seed_shape(client: httpx.AsyncClient) -> None:
    task = await create(client, provider="seedream")
    assert (await ask(client, "seedream", id=task["task_id"])).json() == {}  # no result yet
    await client.post(f"/_fake/tasks/{task['task_id']}/finish")
    wrapper = (await ask(client, "seedream", id=task["task_id"])).json()
    assert set(wrapper) == WRAPPER_KEYS and wrapper["type"] == "images"
    assert isinstance(wrapper["created_at"], float) and wrapper["trace_id"] == task["trace_id"]
    response = wrapper["response"]
    assert set(response) == {"success", "task_id", "trace_id", "data"}
    assert set(response["data"][0]) == {"prompt", "size", "image_url"}
    assert response["data"][0]["image_url"].startswith("http://fake/files/")


async def test_seedance_reports_progress_then_the_video(client: httpx.AsyncClient) -> None:
    task_id = (await create(client, provider="seedance"))["task_id"]
    data = (await ask(client, "seedance", id=task_id)).json()["response"]["data"]
    assert data["status"] == "queued" and data["video_url"] is None
    await client.post("/_fake/finish_all")
    wrapper = (await ask(client, "seedance", id=task_id.upper())).json()  # ids match loosely
    assert wrapper["type"] == "videos"
    data = wrapper["response"]["data"]
    assert set(data) == {"task_id", "status", "video_url", "last_frame_url", "model"}
    assert data["status"] == "succeeded" and data["task_id"].startswith("cgt-")
    assert data["video_url"].endswith(".mp4")


async def test_dreamina_answers_done_with_dashless_id_and_by_trace_id(
    client: httpx.AsyncClient,
) -> None:
    task = await create(client, provider="dreamina", finish_after=0)
    response = (await ask(client, "dreamina", id=task["task_id"])).json()["response"]
    assert response["data"]["task_id"] == task["task_id"].replace("-", "")
    assert response["data"]["status"] == "done"
    assert {"video_url", "image_url", "audio_url"} <= set(response["data"])
    by_trace = (await ask(client, "dreamina", trace_id=task["trace_id"])).json()
    assert by_trace["id"] == task["task_id"]
    missing = await ask(client, "dreamina")
    assert missing.status_code == 400 and missing.json()["error"]["code"] == "bad_request"


async def test_failed_acedata_task_carries_an_error_code(client: httpx.AsyncClient) -> None:
    task_id = (await create(client, provider="seedance", outcome="failed", finish_after=0))[
        "task_id"
    ]
    response = (await ask(client, "seedance", id=task_id)).json()["response"]
    assert response["success"] is False and response["error"]["code"]
    assert response["task_id"] == task_id


async def test_unknown_task_and_other_service_answer_empty(client: httpx.AsyncClient) -> None:
    task_id = (await create(client, provider="seedance", finish_after=0))["task_id"]
    assert (await ask(client, "seedance", id="00000000-0000-4000-8000-000000000000")).json() == {}
    assert (await ask(client, "seedream", id=task_id)).json() == {}


@pytest.mark.parametrize(("unknown_as_empty", "count"), [(False, 2), (True, 4)])
async def test_batch_leaves_out_unknown_and_unfinished(unknown_as_empty: bool, count: int) -> None:
    async with fake(config(unknown_as_empty=unknown_as_empty)) as (state, c):
        done = [(await create(c, provider="seedream", finish_after=0))["task_id"] for _ in "ab"]
        waiting = (await create(c, provider="seedream"))["task_id"]
        ids = [done[0], "unknown-id", waiting, done[1]]
        body = {"action": "retrieve_batch", "ids": ids}
        answer = (await c.post("/seedream/tasks", json=body, headers=ACE)).json()
        assert answer["count"] == count == len(answer["items"])
        assert [i["id"] for i in answer["items"] if i] == done
        assert state.stats_json()["batch_ids"] == {"seedream": [4]}


@pytest.mark.parametrize(
    "headers", [{}, {"authorization": "Bearer nope"}, {"authorization": TOKEN}]
)
async def test_acedata_auth_failure_shape(client: httpx.AsyncClient, headers: dict) -> None:
    answer = await client.post("/seedance/tasks", json={"id": "x"}, headers=headers)
    assert answer.status_code == 401
    body = answer.json()
    assert body["success"] is False and body["error"]["code"] == "invalid_token"
    assert body["error"]["message"] and body["trace_id"]
    assert (await client.get("/_fake/stats")).json()["unauthorized"] == {"seedance": 1}


async def test_seedance2_auth_failure_and_unknown_task(client: httpx.AsyncClient) -> None:
    denied = await client.get("/v1/video/generations/asyntask_x", headers=ACE)
    assert denied.status_code == 401 and denied.json()["code"] == "invalid_api_key"
    unknown = await client.get("/v1/video/generations/asyntask_x", headers=S2)
    assert unknown.status_code == 404 and unknown.json()["code"] == "task_not_found"


async def test_fault_queue_yields_exactly_the_forced_answers(client: httpx.AsyncClient) -> None:
    task_id = (await create(client, provider="seedream", finish_after=0))["task_id"]
    forced = ["429", "500", "malformed", "empty", "ok", "401"]
    await client.post("/_fake/faults", json={"next": forced, "retry_after": 7})
    answers = [await ask(client, "seedream", id=task_id) for _ in range(len(forced) + 1)]
    assert [a.status_code for a in answers] == [429, 500, 200, 200, 200, 401, 200]
    assert answers[0].headers["retry-after"] == "7"
    assert answers[0].json()["error"]["code"] == "too_many_requests"
    assert answers[1].json() == {**answers[1].json(), "success": False}
    with pytest.raises(ValueError):
        answers[2].json()
    assert answers[3].json() == {}
    assert answers[4].json()["id"] == answers[6].json()["id"] == task_id
    stats = (await client.get("/_fake/stats")).json()
    assert stats["faults"] == {"429": 1, "500": 1, "malformed": 1, "empty": 1, "401": 1}
    assert stats["calls"] == {"seedream": {"retrieve": 7}}


async def test_provider_faults_apply_to_that_provider_only(client: httpx.AsyncClient) -> None:
    await client.post("/_fake/faults", json={"provider": "seedance", "rates": {"500": 1}})
    assert (await ask(client, "seedance", id="a")).status_code == 500
    assert (await ask(client, "seedream", id="a")).status_code == 200
    await client.post("/_fake/faults", json={"provider": "seedance2", "next": ["empty"]})
    empty = await client.get("/v1/video/generations/asyntask_x", headers=S2)
    assert empty.status_code == 200 and empty.json() == {}


async def test_empty_fault_on_a_batch_answers_empty_items(client: httpx.AsyncClient) -> None:
    await client.post("/_fake/faults", json={"next": ["empty"]})
    body = {"action": "retrieve_batch", "ids": ["a", "b"]}
    answer = await client.post("/dreamina/tasks", json=body, headers=ACE)
    assert answer.json() == {"items": [{}, {}], "count": 2}


async def test_bad_fault_settings_change_nothing(client: httpx.AsyncClient) -> None:
    bad = await client.post("/_fake/faults", json={"next": ["429"], "rates": {"418": 1}})
    assert bad.status_code == 400
    assert (await ask(client, "seedream", id="a")).status_code == 200


async def test_seeded_fault_rates_are_reproducible() -> None:
    async def statuses() -> list[int]:
        async with fake(config(seed=42, faults={"429": 0.3, "500": 0.2})) as (_, c):
            return [(await ask(c, "seedance", id="a")).status_code for _ in range(30)]

    first = await statuses()
    assert first == await statuses()
    assert {200, 429, 500} == set(first)


async def test_api_not_implemented_mode_keeps_single_retrieve() -> None:
    async with fake(config(batch_not_implemented=("seedance",))) as (_, c):
        task_id = (await create(c, provider="seedance", finish_after=0))["task_id"]
        body = {"action": "retrieve_batch", "ids": [task_id]}
        refused = await c.post("/seedance/tasks", json=body, headers=ACE)
        assert refused.status_code == 400
        assert refused.json()["error"]["code"] == "api_not_implemented"
        assert (await ask(c, "seedance", id=task_id)).json()["id"] == task_id
        await c.post("/_fake/faults", json={"batch_not_implemented": []})
        assert (await c.post("/seedance/tasks", json=body, headers=ACE)).json()["count"] == 1


async def test_seedance2_moves_to_success_with_a_signed_url(client: httpx.AsyncClient) -> None:
    task_id = (await create(client, provider="seedance2"))["task_id"]
    assert re.fullmatch(r"asyntask_[A-Za-z0-9]{32}", task_id)
    before = (await client.get(f"/v1/video/generations/{task_id}", headers=S2)).json()
    assert before["data"]["status"] == "NOT_START" and "result_url" not in before["data"]
    await client.post(f"/_fake/tasks/{task_id}/finish")
    body = (await client.get(f"/v1/video/generations/{task_id}", headers=S2)).json()
    assert body["code"] == "success" and body["message"] == ""
    data = body["data"]
    assert data["status"] == "SUCCESS" and data["progress"] == "100%"
    assert data["fail_reason"] == data["result_url"] == data["data"]["content"]["video_url"]
    assert "X-Tos-Expires=86400" in data["result_url"] and "X-Tos-Signature=" in data["result_url"]
    video = await client.get(data["result_url"])
    assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"


async def test_seedance2_failure_has_a_reason_and_no_url(client: httpx.AsyncClient) -> None:
    task_id = (await create(client, provider="seedance2", outcome="failed", finish_after=0))[
        "task_id"
    ]
    data = (await client.get(f"/v1/video/generations/{task_id}", headers=S2)).json()["data"]
    assert data["status"] == "FAILURE" and "result_url" not in data
    assert data["fail_reason"].startswith("task failed") and data["start_time"] == 0


def test_seedance2_phases_follow_elapsed_time() -> None:
    task = payloads.FakeTask(
        "seedance2", "asyntask_x", "t", "succeeded", 1000.0, 1100.0, "", None, "", ""
    )
    phases = [payloads.seedance2_phase(task, now) for now in (1000, 1020, 1030, 1099, 1100)]
    expected = ["NOT_START", "QUEUED", "IN_PROGRESS", "IN_PROGRESS", "SUCCESS"]
    assert [status for status, _ in phases] == expected
    assert phases[2][1] == "50%" and phases[4][1] == "100%"


@pytest.mark.parametrize(("name", "media"), [("a.jpg", "image/jpeg"), ("b.mp4", "video/mp4")])
async def test_files_are_deterministic_bytes(name: str, media: str) -> None:
    async with fake(config(file_bytes=100_000)) as (_, c):
        first, second = await c.get(f"/files/{name}"), await c.get(f"/files/{name}")
    assert first.headers["content-type"] == media
    assert first.content == second.content == fu.file_content(name, 100_000)
    assert len(first.content) == 100_000 and first.content != fu.file_content("other.jpg", 100_000)


async def test_altered_or_expired_signed_urls_are_refused(client: httpx.AsyncClient) -> None:
    name, date = "seedance2-x.mp4", "20200101T000000Z"
    sig = payloads._tos_signature(name, date, "86400")
    expired = f"/files/{name}?X-Tos-Date={date}&X-Tos-Expires=86400&X-Tos-Signature={sig}"
    assert (await client.get(expired)).status_code == 403
    altered = expired.replace("86400", "999999999", 1)
    assert (await client.get(altered)).json()["error"]["message"] == "SignatureDoesNotMatch"


async def test_control_api_validates(client: httpx.AsyncClient) -> None:
    assert (await client.post("/_fake/tasks", json={"provider": "nope"})).status_code == 400
    bulk = await client.post("/_fake/tasks", json={"tasks": [{"provider": "seedream"}] * 2})
    a, b = bulk.json()["tasks"]
    assert a["task_id"] != b["task_id"] and re.fullmatch(r"[0-9a-f-]{36}", a["task_id"])
    again = await client.post(
        "/_fake/tasks", json={"provider": "seedream", "task_id": a["task_id"]}
    )
    assert again.status_code == 409
    assert (await client.post("/_fake/tasks/nope/finish")).status_code == 404


async def test_timeout_fault_holds_until_the_client_gives_up() -> None:
    async with (
        fu.running_fake(config(timeout_hold=30)) as base,
        httpx.AsyncClient(base_url=base, trust_env=False, timeout=0.2) as c,
    ):
        await c.post("/_fake/faults", json={"next": ["timeout"]})
        with pytest.raises(httpx.ReadTimeout):
            await ask(c, "seedream", id="a")
        assert (await ask(c, "seedream", id="a")).status_code == 200


@dataclass
class Inbox:
    base: str
    received: list[tuple[str, Any]] = field(default_factory=list)  # (path tail, body)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)


@asynccontextmanager
async def receiver() -> AsyncIterator[Inbox]:
    """A callback endpoint on 127.0.0.1 that records every POST to ``{base}/cb/{tag}``."""

    async def record(request: Request) -> JSONResponse:
        inbox.received.append((request.path_params["tag"], await request.json()))
        inbox.arrived.set()
        return JSONResponse({"ok": True})

    async with fu.serving(Starlette(routes=[Route("/cb/{tag}", record, methods=["POST"])])) as base:
        inbox = Inbox(base)
        yield inbox


async def deliver(cfg: fu.FakeConfig, provider: str, n: int) -> tuple[dict, list]:
    async with receiver() as inbox, fake(cfg) as (state, c):
        specs = [{"provider": provider, "callback_url": f"{inbox.base}/cb/{i}"} for i in range(n)]
        await c.post("/_fake/tasks", json={"tasks": specs})
        await c.post("/_fake/finish_all")
        await state.sender.drained()
        return state.sender.stats.to_json(), inbox.received


async def test_callbacks_drop_duplicate_and_send_empty_bodies_by_seed() -> None:
    policy = fu.CallbackPolicy(drop=0.3, duplicate=0.3, empty_first=0.2)
    stats, received = await deliver(config(seed=7, callbacks=policy), "seedance", 20)
    assert stats["submitted"] == 20 and stats["dropped"] and stats["duplicated"]
    assert stats["empty_first"] and stats["failed"] == stats["rejected"] == 0
    finals = Counter(tag for tag, body in received if body)
    assert (
        len(received)
        == stats["sent"]
        == 20 - stats["dropped"] + stats["duplicated"] + stats["empty_first"]
    )
    assert sum(1 for i in range(20) if str(i) not in finals) == stats["dropped"]
    assert sum(1 for n in finals.values() if n == 2) == stats["duplicated"]
    assert sum(1 for _, body in received if body == {}) == stats["empty_first"]
    assert all(body["data"]["status"] == "succeeded" for _, body in received if body)
    again_stats, again = await deliver(config(seed=7, callbacks=policy), "seedance", 20)
    assert again_stats == stats and Counter(t for t, b in again if b) == finals


async def test_ticker_sends_the_callback_of_a_task_that_finished_on_time() -> None:
    async with receiver() as inbox, fake(config(tick=0.01)) as (_, c):
        await create(c, provider="seedance", callback_url=f"{inbox.base}/cb/0", finish_after=0.05)
        await asyncio.wait_for(inbox.arrived.wait(), 10)
    assert inbox.received[0][1]["data"]["status"] == "succeeded"


async def test_seedance2_intermediate_callback_comes_first() -> None:
    policy = fu.CallbackPolicy(intermediate=True)
    _, received = await deliver(config(callbacks=policy), "seedance2", 1)
    assert [body["data"]["status"] for _, body in received] == ["IN_PROGRESS", "SUCCESS"]


async def test_wrapper_callbacks_and_reordering_still_deliver_all() -> None:
    policy = fu.CallbackPolicy(wrapper=True, reorder=0.05)
    stats, received = await deliver(config(callbacks=policy), "seedream", 5)
    assert stats["sent"] == 5 and {tag for tag, _ in received} == {str(i) for i in range(5)}
    assert all(set(body) == WRAPPER_KEYS for _, body in received)


async def test_shutdown_cancels_delayed_callbacks() -> None:
    async with fake(config(callbacks=fu.CallbackPolicy(reorder=30))) as (state, c):
        await create(c, provider="seedream", callback_url="http://127.0.0.1:9/cb", finish_after=0)
    assert state.sender.stats.cancelled == 1 and state.sender.stats.sent == 0


# -- creation endpoints ---------------------------------------------------------------

BODIES = CREATION_REQUESTS
PATHS = CREATE_PATHS
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


async def submit(c: httpx.AsyncClient, provider: str, **extra: Any) -> httpx.Response:
    """One creation call as taskhook makes it (AceData: with ``async: true``)."""
    headers, mode = (S2, {}) if provider == "seedance2" else (ACE, {"async": True})
    body = {**BODIES[provider], **mode, **extra}
    return await c.post(PATHS[provider], json=body, headers=headers)


async def creation_log(c: httpx.AsyncClient, provider: str | None = None) -> list[dict]:
    params = {"provider": provider} if provider else {}
    answer = (await c.get("/_fake/creations", params=params)).json()
    assert answer["count"] == len(answer["calls"])
    return answer["calls"]


@pytest.mark.parametrize("provider", ["seedream", "seedance", "dreamina"])
async def test_acedata_creation_answers_at_once_then_calls_back(provider: str) -> None:
    async with receiver() as inbox, fake(config(tick=0.01)) as (state, c):
        callback_url = f"{inbox.base}/cb/{provider}"
        await c.post("/_fake/creations", json={"finish_after": 0.05})
        answer = await submit(c, provider, callback_url=callback_url)
        assert answer.status_code == 200
        assert set(answer.json()) == {"task_id", "trace_id"}
        task_id, trace_id = answer.json()["task_id"], answer.json()["trace_id"]
        assert UUID.fullmatch(task_id) and UUID.fullmatch(trace_id) and task_id != trace_id
        [call] = await creation_log(c)
        assert call["path"] == PATHS[provider] and call["provider"] == provider
        assert call["body"] == {**BODIES[provider], "callback_url": callback_url, "async": True}
        assert call["authorized"] is True and call["headers"]["authorization"] == "<redacted>"
        assert TOKEN not in str(call)
        assert (call["outcome"], call["status"]) == ("ok", 200)
        assert (call["task_id"], call["trace_id"]) == (task_id, trace_id)
        await asyncio.wait_for(inbox.arrived.wait(), 10)
        [(tag, body)] = inbox.received
        assert tag == provider and body["success"] is True
        if provider == "dreamina":  # its result names the task without dashes, under data
            assert body["data"]["task_id"] == task_id.replace("-", "")
        else:
            assert (body["task_id"], body["trace_id"]) == (task_id, trace_id)
        retrieved = (await ask(c, provider, id=task_id)).json()
        assert retrieved["id"] == task_id and retrieved["request"]["callback_url"] == callback_url
        assert state.stats_json()["calls"][provider] == {"create": 1, "retrieve": 1}


async def test_callback_misbehaviour_applies_to_created_tasks() -> None:
    async with receiver() as inbox, fake(config(seed=3)) as (state, c):
        await c.post("/_fake/callbacks", json={"drop": 1})
        dropped = await submit(c, "seedance", callback_url=f"{inbox.base}/cb/a")
        await c.post("/_fake/finish_all")  # the fate of a callback is drawn when it is due
        await c.post("/_fake/callbacks", json={"drop": 0, "duplicate": 1, "empty_first": 1})
        twice = await submit(c, "seedance", callback_url=f"{inbox.base}/cb/b")
        await c.post("/_fake/finish_all")
        await state.sender.drained()
    assert dropped.status_code == twice.status_code == 200
    assert [tag for tag, _ in inbox.received] == ["b", "b", "b"]
    task_id = twice.json()["task_id"]
    assert [body.get("task_id") for _, body in inbox.received] == [None, task_id, task_id]
    assert state.sender.stats.dropped == 1 and state.sender.stats.duplicated == 1


async def test_seedance2_creation_answers_a_video_object_and_is_queryable(
    client: httpx.AsyncClient,
) -> None:
    answer = await submit(client, "seedance2")
    assert answer.status_code == 200
    video = answer.json()
    assert (
        re.fullmatch(r"asyntask_[A-Za-z0-9]{32}", video["id"]) and video["task_id"] == video["id"]
    )
    assert video["object"] == "video" and video["status"] == "queued" and video["progress"] == 0
    assert video["model"] == BODIES["seedance2"]["model"] and isinstance(video["created_at"], int)
    query = await client.get(f"/v1/video/generations/{video['task_id']}", headers=S2)
    assert query.status_code == 200 and query.json()["data"]["task_id"] == video["task_id"]
    [call] = await creation_log(client, "seedance2")
    assert call["body"] == BODIES["seedance2"] and call["trace_id"] is None
    assert KEY not in str(call)


async def test_minimal_answer_shapes_carry_only_the_task_id(client: httpx.AsyncClient) -> None:
    await client.post("/_fake/creations", json={"answer_shape": "minimal"})
    for provider in ("seedance", "seedance2"):
        answer = (await submit(client, provider, callback_url="http://127.0.0.1:9/cb")).json()
        assert list(answer) == ["task_id"] and answer["task_id"]


@pytest.mark.parametrize("provider", ["seedream", "seedance2"])
async def test_forced_outcomes_answer_in_order_and_create_nothing(provider: str) -> None:
    forced = [
        {"outcome": "400", "code": "bad_request", "message": "model is invalid."},
        "422",
        {"outcome": "429", "retry_after": 7},
        "401",
        "403",
        "500",
        "ok",
    ]
    async with fake() as (state, c):
        settings = await c.post("/_fake/creations", json={"provider": provider, "next": forced})
        assert len(settings.json()["next"][provider]) == len(forced)
        answers = [await submit(c, provider, callback_url="http://127.0.0.1:9/cb") for _ in forced]
        assert [a.status_code for a in answers] == [400, 422, 429, 401, 403, 500, 200]
        assert answers[2].headers["retry-after"] == "7"
        assert all("retry-after" not in a.headers for a in answers[3:])
        for answer in answers[:-1]:
            body = answer.json()
            error = body if provider == "seedance2" else body["error"]
            assert error["code"] and error["message"]
            assert (body["data"] is None) if provider == "seedance2" else body["trace_id"]
        first = answers[0].json()
        assert (first if provider == "seedance2" else first["error"])["code"] == "bad_request"
        assert state.stats_json()["tasks"]["total"] == 1  # only the "ok" created a task
        log = await creation_log(c)
        assert [e["outcome"] for e in log] == [
            f if isinstance(f, str) else f["outcome"] for f in forced
        ]
        assert [e["task_id"] is None for e in log] == [True] * 6 + [False]
        assert (await c.post("/_fake/creations", json={})).json()["next"] == {}


async def test_retry_after_default_and_omitted(client: httpx.AsyncClient) -> None:
    await client.post("/_fake/faults", json={"retry_after": 3})
    await client.post(
        "/_fake/creations", json={"next": ["429", {"outcome": "429", "retry_after": None}]}
    )
    first, second = [await submit(client, "dreamina") for _ in "ab"]
    assert first.headers["retry-after"] == "3" and "retry-after" not in second.headers
    assert second.status_code == 429 and second.json()["error"]["code"] == "too_many_requests"


async def test_provider_queue_goes_before_the_shared_one(client: httpx.AsyncClient) -> None:
    await client.post("/_fake/creations", json={"next": ["500"]})
    await client.post("/_fake/creations", json={"provider": "seedance", "next": ["403"]})
    statuses = [(await submit(client, p)).status_code for p in ("seedance", "seedance", "seedream")]
    assert statuses == [403, 500, 200]


async def test_wrong_token_creates_nothing_and_is_logged(client: httpx.AsyncClient) -> None:
    denied = await client.post(PATHS["seedance"], json=BODIES["seedance"], headers=S2)
    assert denied.status_code == 401 and denied.json()["error"]["code"] == "invalid_token"
    s2 = await client.post(PATHS["seedance2"], json=BODIES["seedance2"])
    assert s2.status_code == 401 and s2.json()["code"] == "invalid_api_key"
    log = await creation_log(client)
    assert [(e["authorized"], e["outcome"], e["task_id"]) for e in log] == [
        (False, "unauthorized", None)
    ] * 2
    assert KEY not in str(log) and (await client.get("/_fake/stats")).json()["tasks"]["total"] == 0


@pytest.mark.parametrize(
    ("provider", "body", "fragment"),
    [
        ("seedream", {"model": "m"}, "prompt is required"),
        ("seedance", {"content": []}, "model, content is required"),
        ("dreamina", {"image_url": "https://a/b.jpg"}, "audio_url is required"),
        ("seedance2", {"model": "m"}, "prompt is required"),
        ("seedance", {**BODIES["seedance"], "callback_url": "ftp://x"}, "callback_url"),
    ],
)
async def test_incomplete_creation_bodies_get_400(
    client: httpx.AsyncClient, provider: str, body: dict, fragment: str
) -> None:
    headers = S2 if provider == "seedance2" else ACE
    answer = await client.post(PATHS[provider], json=body, headers=headers)
    assert answer.status_code == 400
    error = answer.json() if provider == "seedance2" else answer.json()["error"]
    assert fragment in error["message"]
    assert (await creation_log(client))[0]["outcome"] == "invalid"


async def test_without_async_or_callback_acedata_answers_the_result(
    client: httpx.AsyncClient,
) -> None:
    await client.post("/_fake/creations", json={"finish_after": 0})
    answer = await client.post(PATHS["seedream"], json=BODIES["seedream"], headers=ACE)
    body = answer.json()
    assert body["success"] is True and body["data"][0]["image_url"].endswith(".jpg")


async def test_failed_task_outcome_calls_back_a_failure() -> None:
    async with receiver() as inbox, fake() as (state, c):
        await c.post("/_fake/creations", json={"provider": "seedance", "task_outcome": "failed"})
        await submit(c, "seedance", callback_url=f"{inbox.base}/cb/x")
        await c.post("/_fake/finish_all")
        await state.sender.drained()
    [(_, body)] = inbox.received
    assert body["success"] is False and body["error"]["code"] == "generation_failed"


async def test_hang_creates_at_once_so_the_callback_can_precede_the_answer() -> None:
    async with (
        receiver() as inbox,
        fu.running_fake(config(tick=0.01)) as base,
        httpx.AsyncClient(base_url=base, trust_env=False) as c,
    ):
        await c.post("/_fake/creations", json={"next": [{"outcome": "hang", "seconds": 60}]})
        await c.post("/_fake/creations", json={"finish_after": 0})
        callback_url = f"{inbox.base}/cb/h"
        pending = asyncio.create_task(submit(c, "seedance", callback_url=callback_url))
        await asyncio.wait_for(inbox.arrived.wait(), 10)
        assert not pending.done()  # the answer is still held
        [call] = await creation_log(c)
        assert call["outcome"] == "hang" and call["status"] is None
        assert inbox.received[0][1]["task_id"] == call["task_id"]
        pending.cancel()  # the client gives up: the fake stops holding
        with pytest.raises(asyncio.CancelledError):
            await pending

        async def released() -> bool:
            return (await creation_log(c))[0]["client_gone"] is True

        await eventually(released, "the fake to stop holding the answer")


async def test_short_hang_then_the_normal_answer(client: httpx.AsyncClient) -> None:
    await client.post("/_fake/creations", json={"next": [{"outcome": "hang", "seconds": 0.05}]})
    answer = await submit(client, "seedance2")
    assert answer.status_code == 200 and answer.json()["task_id"].startswith("asyntask_")
    [call] = await creation_log(client)
    assert (call["outcome"], call["status"], call["client_gone"]) == ("hang", 200, False)


@pytest.mark.parametrize("create", [True, False])
async def test_close_drops_the_connection_after_reading_the_request(create: bool) -> None:
    async with (
        fu.running_fake(config()) as base,
        httpx.AsyncClient(base_url=base, trust_env=False) as c,
    ):
        outcome = {"outcome": "close", "create": create}
        await c.post("/_fake/creations", json={"provider": "dreamina", "next": [outcome]})
        with pytest.raises(httpx.RemoteProtocolError):
            await submit(c, "dreamina", callback_url="http://127.0.0.1:9/cb")
        [call] = await creation_log(c)
        assert call["body"]["callback_url"] == "http://127.0.0.1:9/cb"
        assert (call["outcome"], call["status"]) == ("close", None)
        assert (call["task_id"] is not None) is create
        assert (await c.get("/_fake/stats")).json()["tasks"]["total"] == int(create)
        assert (
            await submit(c, "dreamina", callback_url="http://127.0.0.1:9/cb")
        ).status_code == 200


async def test_close_outside_uvicorn_raises(client: httpx.AsyncClient) -> None:
    await client.post("/_fake/creations", json={"next": ["close"]})
    with pytest.raises(fu.ConnectionDropped):
        await submit(client, "seedream")


async def test_creation_latency_holds_every_answer() -> None:
    async with (
        fu.running_fake(config(create_latency=30)) as base,
        httpx.AsyncClient(base_url=base, trust_env=False, timeout=0.2) as c,
    ):
        with pytest.raises(httpx.ReadTimeout):
            await submit(c, "seedream")
        await c.post("/_fake/creations", json={"latency": 0})
        assert (await submit(c, "seedream")).status_code == 200
        assert (await c.get("/_fake/stats")).json()["calls"]["seedream"] == {"create": 2}


async def test_creation_controls_validate_and_change_nothing_when_bad(
    client: httpx.AsyncClient,
) -> None:
    for bad in (
        {"next": ["418"]},
        {"next": [{"outcome": "hang", "seconds": 61}]},
        {"next": [{"outcome": "ok", "colour": "red"}]},
        {"provider": "nope"},
        {"latency": -1},
        {"task_outcome": "maybe"},
        {"answer_shape": "huge", "next": ["500"]},
    ):
        assert (await client.post("/_fake/creations", json=bad)).status_code == 400, bad
    assert (await client.get("/_fake/creations", params={"provider": "nope"})).status_code == 400
    assert (await submit(client, "seedream")).status_code == 200


async def test_creation_log_filters_by_provider_and_clears(client: httpx.AsyncClient) -> None:
    for provider in ("seedream", "seedance2", "seedream"):
        await submit(client, provider)
    assert [e["seq"] for e in await creation_log(client, "seedream")] == [1, 3]
    await client.post("/_fake/creations", json={"clear_log": True})
    assert await creation_log(client) == []
