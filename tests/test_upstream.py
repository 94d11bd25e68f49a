"""Provider clients against httpx.MockTransport: requests sent, answers read, errors mapped."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest

from server import __version__
from server.errors import UpstreamError
from server.providers import build_clients
from server.providers.acedata import AceDataClient
from server.providers.base import Answer
from server.providers.seedance2 import Seedance2Client
from server.providers.upstream import (
    BadAnswer,
    ConnectionFailed,
    NotImplementedAction,
    RateLimited,
    Rejected,
    ServerError,
    UpstreamTimeout,
    UpstreamUnauthorized,
    default_http_client,
    parse_retry_after,
)
from server.settings import Settings

TOKEN = "sk-test-0123456789abcdef"
BASE = "https://api.acedata.test"
S2_BASE = "https://s2.test"

Handler = Callable[[httpx.Request], Any]

# Shapes copied (shortened) from the seeds' examples.
SEEDANCE_ITEM = {
    "_id": "69480c5cff2676299c7b351d",
    "id": "9462ca25-468b-45a5-9e75-6f516dedcc80",
    "created_at": 1766329436.091,
    "request": {"model": "doubao-seedance-1-0-pro-250528", "callback_url": "dummy"},
    "trace_id": "24b1b09c-5649-4290-98db-eab23e5efcac",
    "type": "videos",
    "response": {
        "success": True,
        "task_id": "9462ca25-468b-45a5-9e75-6f516dedcc80",
        "trace_id": "24b1b09c-5649-4290-98db-eab23e5efcac",
        "data": {
            "task_id": "cgt-20251221230356-sxgt7",
            "status": "succeeded",
            "video_url": "https://platform.cdn.acedata.cloud/seedance/d1c2e49e.mp4",
            "last_frame_url": None,
            "model": "doubao-seedance-1-0-pro-250528",
        },
    },
}
DREAMINA_RESPONSE_ONLY = {  # no wrapper id: only the dashless data.task_id names the task
    "trace_id": "a9063166-26ed-4451-85b5-54e896817c69",
    "response": {
        "success": True,
        "data": {
            "task_id": "362b4fed67bd11f1ad1100163e57d510",
            "status": "done",
            "video_url": "https://cdn.acedata.cloud/634d760216.mp4",
        },
    },
}
DREAMINA_ID = "362b4fed-67bd-11f1-ad11-00163e57d510"
SEEDREAM_SINGLE = (
    b'{"success": true, "task_id": "84d1544a-9043-4dde-a98b-e889dacd75f6", '
    b'"trace_id": "176acf03-7ca7-4fc6-85db-e3724d4f59eb", "data": [{"prompt": '
    b'"a white siamese cat", "size": "2048x2048", "image_url": "https://x.test/6e5f.jpg"}]}'
)
S2_ID = "asyntask_h81efT0qwtLnzyt6VENmCZ6VXSfNxE2E"
S2_SUCCESS = {
    "code": "success",
    "message": "",
    "data": {
        "task_id": S2_ID,
        "action": "generate",
        "status": "SUCCESS",
        "result_url": "https://ark.test/video.mp4?sig=1",
        "submit_time": 1777288506,
        "progress": "100%",
        "data": {"id": "cgt-20260427191505-9j2q7", "status": "succeeded"},
    },
}


def error_body(code: str, message: str = "nope") -> dict[str, Any]:
    return {"success": False, "error": {"code": code, "message": message}, "trace_id": "t-1"}


def acedata(handler: Handler, provider: str = "seedance") -> AceDataClient:
    http = default_http_client(transport=httpx.MockTransport(handler))
    return AceDataClient(provider, BASE, TOKEN, http)


def seedance2(handler: Handler, concurrency: int = 4) -> Seedance2Client:
    http = default_http_client(transport=httpx.MockTransport(handler))
    return Seedance2Client(S2_BASE, TOKEN, http, concurrency=concurrency)


def body_of(request: httpx.Request) -> dict[str, Any]:
    return json.loads(request.content)


# --- AceData: requests and matching -------------------------------------------------------


async def test_retrieve_batch_sends_the_documented_request_and_keeps_each_item() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"items": [SEEDANCE_ITEM], "count": 1})

    client = acedata(handler)
    result = await client.retrieve_batch([SEEDANCE_ITEM["id"]])

    (request,) = seen
    assert request.method == "POST"
    assert request.url == httpx.URL(f"{BASE}/seedance/tasks")
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert request.headers["accept"] == "application/json"
    assert request.headers["user-agent"] == f"taskhook/{__version__}"
    assert body_of(request) == {"action": "retrieve_batch", "ids": [SEEDANCE_ITEM["id"]]}
    answer = result[SEEDANCE_ITEM["id"]]
    assert answer == Answer(
        task_id=SEEDANCE_ITEM["id"],
        body=json.dumps(SEEDANCE_ITEM, separators=(",", ":"), ensure_ascii=False).encode(),
        payload=SEEDANCE_ITEM,
    )
    assert client.batch_supported


async def test_retrieve_batch_matches_ids_across_case_dashes_and_dreamina_dashless_ids() -> None:
    asked_seedance = SEEDANCE_ITEM["id"].upper()
    asked_dreamina = DREAMINA_ID.upper()
    by_response_task_id = {"response": {"success": True, "task_id": "ABC-123", "data": {}}}

    def handler(request: httpx.Request) -> httpx.Response:
        items = [SEEDANCE_ITEM, DREAMINA_RESPONSE_ONLY, by_response_task_id]
        return httpx.Response(200, json={"items": items, "count": 3})

    result = await acedata(handler, "dreamina").retrieve_batch(
        [asked_seedance, asked_dreamina, "abc123"]
    )

    assert result[asked_seedance] is not None
    assert result[asked_seedance].task_id == asked_seedance
    assert result[asked_seedance].payload == SEEDANCE_ITEM
    assert result[asked_dreamina] is not None
    assert result[asked_dreamina].payload == DREAMINA_RESPONSE_ONLY
    assert result["abc123"] is not None
    assert result["abc123"].payload == by_response_task_id


async def test_retrieve_batch_says_none_for_missing_ids_and_ignores_empty_and_foreign_items() -> (
    None
):
    def handler(request: httpx.Request) -> httpx.Response:
        items = [{}, "junk", None, 7, {"id": "someone-else"}, SEEDANCE_ITEM]
        return httpx.Response(200, json={"items": items, "count": 6})

    result = await acedata(handler).retrieve_batch(["not-there-yet", SEEDANCE_ITEM["id"]])

    assert result == {
        "not-there-yet": None,
        SEEDANCE_ITEM["id"]: result[SEEDANCE_ITEM["id"]],
    }
    assert isinstance(result[SEEDANCE_ITEM["id"]], Answer)


async def test_retrieve_batch_asks_each_task_once_but_answers_every_spelling() -> None:
    sent: list[list[str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(body_of(request)["ids"])
        return httpx.Response(200, json={"items": [SEEDANCE_ITEM, SEEDANCE_ITEM], "count": 2})

    lower = SEEDANCE_ITEM["id"]
    upper_dashless = lower.upper().replace("-", "")
    result = await acedata(handler).retrieve_batch([lower, upper_dashless, lower])

    assert sent == [[lower]]
    assert list(result) == [lower, upper_dashless]
    assert result[lower].task_id == lower
    assert result[upper_dashless].task_id == upper_dashless
    assert result[upper_dashless].payload == SEEDANCE_ITEM


async def test_retrieve_batch_of_nothing_sends_nothing() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise AssertionError("no request expected")

    assert await acedata(handler).retrieve_batch([]) == {}


async def test_retrieve_single_keeps_the_body_as_received_and_reads_empty_as_not_yet() -> None:
    answers = iter([httpx.Response(200, content=SEEDREAM_SINGLE), httpx.Response(200, json={})])
    seen: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/seedream/tasks"
        seen.append(body_of(request))
        return next(answers)

    client = acedata(handler, "seedream")
    answer = await client.retrieve("84d1544a-9043-4dde-a98b-e889dacd75f6")

    assert answer is not None
    assert answer.body == SEEDREAM_SINGLE
    assert answer.payload == json.loads(SEEDREAM_SINGLE)
    assert await client.retrieve("unknown") is None
    assert seen == [
        {"action": "retrieve", "id": "84d1544a-9043-4dde-a98b-e889dacd75f6"},
        {"action": "retrieve", "id": "unknown"},
    ]


async def test_api_not_implemented_falls_back_to_single_retrieves_and_is_remembered() -> None:
    actions: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = body_of(request)
        actions.append(body["action"])
        if body["action"] == "retrieve_batch":
            return httpx.Response(400, json=error_body("api_not_implemented"))
        if body["id"] == SEEDANCE_ITEM["id"]:
            return httpx.Response(200, json=SEEDANCE_ITEM)
        return httpx.Response(200, json={})

    client = acedata(handler)
    first = await client.retrieve_batch([SEEDANCE_ITEM["id"], "pending-1"])

    assert actions == ["retrieve_batch", "retrieve", "retrieve"]
    assert not client.batch_supported
    assert first["pending-1"] is None
    assert first[SEEDANCE_ITEM["id"]].payload == SEEDANCE_ITEM

    actions.clear()
    second = await client.retrieve_batch(["pending-2"])

    assert actions == ["retrieve"]
    assert second == {"pending-2": None}


async def test_fallback_raises_the_error_of_a_failed_single_retrieve() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if body_of(request)["action"] == "retrieve_batch":
            return httpx.Response(400, json=error_body("api_not_implemented"))
        return httpx.Response(500, json=error_body("api_error", "fetch failed"))

    with pytest.raises(ServerError):
        await acedata(handler).retrieve_batch(["a", "b"])


# --- Error mapping ------------------------------------------------------------------------


def answering(status: int, **kwargs: Any) -> Handler:
    """A handler giving every request a fresh ``httpx.Response(status, **kwargs)``."""
    return lambda request: httpx.Response(status, **kwargs)


def raising(exc_type: type[httpx.TransportError]) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc_type(f"boom for {request.url.path}", request=request)

    return handler


# Error bodies echo the token, as a careless upstream might: it must not reach our messages.
ECHO = f"bad header Bearer {TOKEN}"
ERROR_CASES: list[tuple[str, Handler, type[UpstreamError]]] = [
    ("401", answering(401, json=error_body("invalid_token", ECHO)), UpstreamUnauthorized),
    ("429", answering(429, json=error_body("too_many_requests")), RateLimited),
    ("500", answering(500, json=error_body("api_error", ECHO)), ServerError),
    ("503", answering(503, text="<html>unavailable</html>"), ServerError),
    ("400", answering(400, json=error_body("token_mismatched", ECHO)), Rejected),
    ("403", answering(403, json={"error": {"message": ECHO}}), Rejected),
    ("timeout", raising(httpx.ReadTimeout), UpstreamTimeout),
    ("connect", raising(httpx.ConnectError), ConnectionFailed),
    ("not-json", answering(200, text=f"<html>{ECHO}</html>"), BadAnswer),
]


#: Each client's call under test: (call, the provider it names, the path its errors show).
CALLS: dict[str, tuple[Callable[[Handler], Awaitable[object]], str, str]] = {
    "acedata": (lambda h: acedata(h).retrieve_batch(["a"]), "seedance", "/seedance/tasks"),
    "seedance2": (
        lambda h: seedance2(h).retrieve(S2_ID),
        "seedance2",
        f"/v1/video/generations/{S2_ID}",
    ),
}


@pytest.mark.parametrize("client", list(CALLS))
@pytest.mark.parametrize(
    ("case", "handler", "expected"), ERROR_CASES, ids=[c[0] for c in ERROR_CASES]
)
async def test_errors_are_translated_without_the_token(
    client: str, case: str, handler: Handler, expected: type[UpstreamError]
) -> None:
    call, provider, path = CALLS[client]
    with pytest.raises(expected) as caught:
        await call(handler)

    exc = caught.value
    assert type(exc) is expected
    assert exc.provider == provider
    assert path in str(exc)
    assert TOKEN not in str(exc) and TOKEN not in repr(exc) and TOKEN not in exc.detail
    if isinstance(exc, UpstreamTimeout | ConnectionFailed):
        assert isinstance(exc.__cause__, httpx.TransportError)


async def test_status_errors_carry_status_and_upstream_code() -> None:
    client = acedata(answering(400, json=error_body("token_mismatched", "why")))
    with pytest.raises(Rejected) as rejected:
        await client.retrieve_batch(["a"])
    assert (rejected.value.status_code, rejected.value.upstream_code) == (400, "token_mismatched")
    assert "400 token_mismatched: why" in str(rejected.value)

    # An error body without "success": false (the Dreamina seed) is read the same way.
    client = acedata(answering(503, json={"error": {"code": "api_error"}}))
    with pytest.raises(ServerError) as server_error:
        await client.retrieve("a")
    assert (server_error.value.status_code, server_error.value.upstream_code) == (503, "api_error")


async def test_api_not_implemented_on_single_retrieve_is_a_rejection() -> None:
    client = acedata(answering(400, json=error_body("api_not_implemented")))
    with pytest.raises(NotImplementedAction) as caught:
        await client.retrieve("a")
    assert isinstance(caught.value, Rejected)
    assert caught.value.upstream_code == "api_not_implemented"


async def test_rate_limited_reads_retry_after_in_seconds_and_as_a_date() -> None:
    def limited(retry_after: str) -> AceDataClient:
        headers = {"retry-after": retry_after}
        return acedata(answering(429, headers=headers))

    with pytest.raises(RateLimited) as seconds:
        await limited("17").retrieve_batch(["a"])
    assert seconds.value.retry_after == 17.0

    with pytest.raises(RateLimited) as past_date:
        await limited("Wed, 21 Oct 2015 07:28:00 GMT").retrieve_batch(["a"])
    assert past_date.value.retry_after == 0.0

    future = format_datetime(datetime.now(UTC) + timedelta(days=1), usegmt=True)
    with pytest.raises(RateLimited) as future_date:
        await limited(future).retrieve_batch(["a"])
    assert future_date.value.retry_after is not None and future_date.value.retry_after > 3600

    with pytest.raises(RateLimited) as absent:
        await acedata(answering(429)).retrieve_batch(["a"])
    assert absent.value.retry_after is None


def test_parse_retry_after() -> None:
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("120", now) == 120.0
    assert parse_retry_after(" 1.5 ", now) == 1.5
    assert parse_retry_after("-3", now) == 0.0
    assert parse_retry_after("Thu, 01 Jan 2026 12:02:00 GMT", now) == 120.0
    assert parse_retry_after("Thu, 01 Jan 2026 11:00:00 GMT", now) == 0.0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after("", now) is None
    assert parse_retry_after(None, now) is None


@pytest.mark.parametrize(
    "payload",
    [{"items": {"a": 1}, "count": 1}, {"count": 0}, [1, 2], "items", None],
    ids=["items-object", "items-missing", "list", "string", "null"],
)
async def test_batch_answer_of_the_wrong_shape_is_a_bad_answer(payload: Any) -> None:
    raw = json.dumps(payload).encode()
    with pytest.raises(BadAnswer) as caught:
        await acedata(answering(200, content=raw)).retrieve_batch(["a"])
    assert caught.value.content == json.dumps(payload).encode()


async def test_bad_answer_keeps_a_bounded_copy_of_the_body() -> None:
    huge = b"x" * (200 * 1024)
    with pytest.raises(BadAnswer) as caught:
        await acedata(answering(200, content=huge)).retrieve("a")
    assert caught.value.content == huge[: 64 * 1024]


async def test_single_retrieve_of_a_non_object_is_a_bad_answer() -> None:
    with pytest.raises(BadAnswer):
        await acedata(answering(200, json=["a"])).retrieve("a")


# --- Seedance 2.0 -------------------------------------------------------------------------


async def test_seedance2_retrieve_sends_a_get_and_keeps_the_raw_body() -> None:
    raw = json.dumps(S2_SUCCESS, indent=2).encode()
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=raw)

    answer = await seedance2(handler).retrieve(S2_ID)

    (request,) = seen
    assert request.method == "GET"
    assert request.url == httpx.URL(f"{S2_BASE}/v1/video/generations/{S2_ID}")
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert answer == Answer(task_id=S2_ID, body=raw, payload=S2_SUCCESS)


async def test_seedance2_quotes_the_task_id_into_one_path_segment() -> None:
    paths: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.raw_path.decode())
        return httpx.Response(404)

    assert await seedance2(handler).retrieve("a/b?c") is None
    assert paths == ["/v1/video/generations/a%2Fb%3Fc"]


@pytest.mark.parametrize(
    ("status", "payload"),
    [
        (404, {"code": "not_found", "message": "task not exist"}),
        (200, {"code": "success", "message": "", "data": None}),
        (200, {"code": "success", "message": "", "data": {}}),
        (200, {"code": "task_not_exist", "message": "not yet"}),
    ],
    ids=["404", "data-null", "data-empty", "data-missing"],
)
async def test_seedance2_not_yet(status: int, payload: dict[str, Any]) -> None:
    assert await seedance2(answering(status, json=payload)).retrieve(S2_ID) is None


@pytest.mark.parametrize("payload", [{"code": "success", "data": ["x"]}, ["x"], "ok"])
async def test_seedance2_wrong_shape_is_a_bad_answer(payload: Any) -> None:
    with pytest.raises(BadAnswer):
        await seedance2(answering(200, json=payload)).retrieve(S2_ID)


async def test_seedance2_retrieve_many_never_has_more_than_concurrency_in_flight() -> None:
    concurrency = 2
    in_flight = 0
    most = 0
    bound_reached = asyncio.Event()
    release = asyncio.Event()

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        if in_flight == concurrency:
            bound_reached.set()
        await release.wait()  # hold every call until the test has looked
        in_flight -= 1
        task_id = request.url.path.rsplit("/", 1)[-1]
        return httpx.Response(200, json={"code": "success", "data": {"task_id": task_id}})

    ids = [f"asyntask_{n}" for n in range(7)]
    client = seedance2(handler, concurrency=concurrency)
    retrieving = asyncio.create_task(client.retrieve_many(ids))
    await bound_reached.wait()
    # Unbounded, every call would already be in the handler: they were all started
    # before this test task was woken.
    assert in_flight == concurrency
    release.set()
    result = await retrieving

    assert most == concurrency
    assert list(result) == ids
    assert all(
        isinstance(a, Answer) and a.payload["data"]["task_id"] == t for t, a in result.items()
    )


async def test_seedance2_retrieve_many_returns_errors_per_id() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        task_id = request.url.path.rsplit("/", 1)[-1]
        if task_id == "broken":
            return httpx.Response(500, text="oops")
        if task_id == "pending":
            return httpx.Response(404)
        return httpx.Response(200, json={"code": "success", "data": {"task_id": task_id}})

    result = await seedance2(handler).retrieve_many(["ok-1", "broken", "pending", "OK-1"])

    assert isinstance(result["broken"], ServerError)
    assert result["pending"] is None
    assert isinstance(result["ok-1"], Answer) and result["ok-1"].task_id == "ok-1"
    assert isinstance(result["OK-1"], Answer) and result["OK-1"].task_id == "OK-1"


async def test_seedance2_retrieve_many_stops_sending_after_unauthorized() -> None:
    requested: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requested.append(request.url.path.rsplit("/", 1)[-1])
        return httpx.Response(401, json={"code": "invalid_token", "message": "bad key"})

    result = await seedance2(handler, concurrency=1).retrieve_many(["a", "b", "c"])

    assert requested == ["a"]
    assert all(isinstance(r, UpstreamUnauthorized) for r in result.values())


# --- Wiring -------------------------------------------------------------------------------


async def test_build_clients_only_for_providers_with_a_token() -> None:
    async with default_http_client() as http:
        assert build_clients(Settings(), http) == {}

        only_acedata = build_clients(Settings(acedata_api_token=TOKEN), http)
        assert sorted(only_acedata) == ["dreamina", "seedance", "seedream"]
        assert all(isinstance(c, AceDataClient) for c in only_acedata.values())
        assert only_acedata["dreamina"].url == "https://api.acedata.cloud/dreamina/tasks"

        only_s2 = build_clients(Settings(seedance2_api_key=TOKEN), http)
        assert list(only_s2) == ["seedance2"]
        assert isinstance(only_s2["seedance2"], Seedance2Client)

        both = build_clients(Settings(acedata_api_token=TOKEN, seedance2_api_key=TOKEN), http)
        assert sorted(both) == ["dreamina", "seedance", "seedance2", "seedream"]


async def test_default_http_client_bounds_its_waits() -> None:
    async with default_http_client() as http:
        assert http.timeout.connect == 5.0
        assert http.timeout.read == 30.0
        assert http.headers["user-agent"] == f"taskhook/{__version__}"
        assert not http.follow_redirects
