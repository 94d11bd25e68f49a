"""Units: one creation call (``server.providers.creation``) and each provider's ``creation``.

Upstream is an ``httpx.MockTransport``; the end-to-end proofs against the
fake upstream are in ``test_submit_e2e.py``.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest

from server.providers import get
from server.providers.creation import (
    DEFAULT_RETRY_AFTER,
    Creation,
    CreationFailed,
    CreationRateLimited,
    CreationRejected,
    OutcomeUnknown,
    send,
)
from server.settings import Settings

TOKEN = "secret-token-value"
CALL = Creation(
    "seedance",
    "https://up.example/seedance/videos",
    TOKEN,
    "ACEDATA_API_TOKEN",
    {"model": "m", "content": [{"type": "text", "text": "cat"}]},
)
SETTINGS = Settings(
    acedata_api_token=TOKEN,
    seedance2_api_key="s2-key",
    acedata_base_url="https://ace.example/",
    seedance2_base_url="https://s2.example",
)


def upstream(
    answer: Callable[[httpx.Request], httpx.Response],
) -> tuple[httpx.MockTransport, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answer(request)

    return httpx.MockTransport(handler), seen


async def test_the_call_carries_path_token_and_body_and_reads_task_id_and_trace_id() -> None:
    transport, seen = upstream(
        lambda r: httpx.Response(200, json={"task_id": "t-1", "trace_id": "tr-1"})
    )
    created = await send(CALL, 5, transport=transport)
    assert (created.task_id, created.trace_id) == ("t-1", "tr-1")
    [request] = seen
    assert request.method == "POST" and str(request.url) == CALL.url
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert json.loads(request.content) == CALL.body
    assert TOKEN not in repr(CALL)


@pytest.mark.parametrize(
    ("answer", "task_id"),
    [
        ({"id": "task_x", "object": "video"}, "task_x"),  # new-api: id only
        ({"task_id": "a", "id": "b"}, "a"),  # task_id wins
        ({"task_id": "", "id": "b"}, "b"),
    ],
)
async def test_task_id_falls_back_to_id(answer: dict, task_id: str) -> None:
    transport, _ = upstream(lambda r: httpx.Response(200, json=answer))
    assert (await send(CALL, 5, transport=transport)).task_id == task_id


@pytest.mark.parametrize(
    "content",
    [
        b"not json",
        b"[1, 2]",
        json.dumps({"trace_id": "tr-9", "status": "queued"}).encode(),
        json.dumps({"task_id": 12}).encode(),
    ],
)
async def test_a_2xx_that_names_no_task_is_an_unknown_outcome_with_its_trace_id(
    content: bytes,
) -> None:
    transport, seen = upstream(lambda r: httpx.Response(200, content=content))
    with pytest.raises(OutcomeUnknown) as caught:
        await send(CALL, 5, transport=transport)
    assert caught.value.http_status == 504 and caught.value.code == "submit_outcome_unknown"
    assert caught.value.trace_id == ("tr-9" if b"tr-9" in content else None)
    assert len(seen) == 1


@pytest.mark.parametrize("status", [400, 422])
async def test_400_and_422_pass_upstreams_code_and_message(status: int) -> None:
    body = {"error": {"code": "bad_request", "message": "model is invalid."}, "trace_id": "t"}
    transport, _ = upstream(lambda r: httpx.Response(status, json=body))
    with pytest.raises(CreationRejected) as caught:
        await send(CALL, 5, transport=transport)
    assert caught.value.http_status == 400
    assert caught.value.body() == {"error": {"code": "bad_request", "message": "model is invalid."}}


async def test_a_gateway_style_refusal_keeps_its_code() -> None:
    body = {"code": "invalid_request", "message": "prompt is required", "data": None}
    transport, _ = upstream(lambda r: httpx.Response(400, json=body))
    with pytest.raises(CreationRejected) as caught:
        await send(CALL, 5, transport=transport)
    assert caught.value.body()["error"] == {
        "code": "invalid_request",
        "message": "prompt is required",
    }


@pytest.mark.parametrize(
    ("header", "expected"),
    [("7", "7"), ("2.5", "3"), (None, str(DEFAULT_RETRY_AFTER)), ("soon", "30"), ("1e9", "3600")],
)
async def test_429_answers_429_with_retry_after(header: str | None, expected: str) -> None:
    headers = {"retry-after": header} if header is not None else {}
    transport, _ = upstream(lambda r: httpx.Response(429, headers=headers, json={}))
    with pytest.raises(CreationRateLimited) as caught:
        await send(CALL, 5, transport=transport)
    assert caught.value.http_status == 429 and caught.value.headers == {"Retry-After": expected}


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (401, "upstream_unauthorized"),
        (403, "upstream_unauthorized"),
        (500, "upstream_error"),
        (503, "upstream_error"),
        (404, "upstream_error"),
    ],
)
async def test_other_refusals_are_502_and_never_retried(status: int, code: str) -> None:
    body = {"error": {"code": "x", "message": "nope"}}
    transport, seen = upstream(lambda r: httpx.Response(status, json=body))
    with pytest.raises(CreationFailed) as caught:
        await send(CALL, 5, transport=transport)
    assert (caught.value.http_status, caught.value.code) == (502, code)
    assert len(seen) == 1
    if status in (401, 403):
        assert "ACEDATA_API_TOKEN" in caught.value.message


async def test_a_refused_connection_sent_nothing_502() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    transport, seen = upstream(refuse)
    with pytest.raises(CreationFailed) as caught:
        await send(CALL, 5, transport=transport)
    assert caught.value.code == "upstream_unreachable" and len(seen) == 1


@pytest.mark.parametrize("error", [httpx.ReadTimeout, httpx.RemoteProtocolError, httpx.ReadError])
async def test_a_failure_after_sending_is_an_unknown_outcome_sent_once(error: type) -> None:
    def fail(request: httpx.Request) -> httpx.Response:
        raise error("gone", request=request)

    transport, seen = upstream(fail)
    with pytest.raises(OutcomeUnknown):
        await send(CALL, 5, transport=transport)
    assert len(seen) == 1


async def test_the_whole_call_is_bounded_by_its_time() -> None:
    """A real socket that accepts and never answers: the call ends at its bound, as unknown.

    The bound leaves time to connect and send on a loaded machine (0.3 s did not)."""
    import asyncio

    done = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)
        await done.wait()
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        call = Creation("seedream", f"http://127.0.0.1:{port}/seedream/images", "t", "X", {})
        with pytest.raises(OutcomeUnknown, match="timed out after the request was sent"):
            await send(call, 2)
    finally:
        done.set()
        server.close()
        await server.wait_closed()


async def test_a_closed_port_is_told_apart_as_not_sent() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connections are refused
        call = Creation("seedream", f"http://127.0.0.1:{port}/seedream/images", "t", "X", {})
        with pytest.raises(CreationFailed, match="before anything was sent"):
            await send(call, 2)


# -- each provider's creation call -----------------------------------------------------


@pytest.mark.parametrize(
    ("name", "url"),
    [
        ("seedream", "https://ace.example/seedream/images"),
        ("seedance", "https://ace.example/seedance/videos"),
        ("dreamina", "https://ace.example/dreamina/videos"),
    ],
)
def test_acedata_calls_back_taskhook_and_asks_for_an_async_answer(name: str, url: str) -> None:
    request = {"prompt": "p", "callback_url": "https://elsewhere/cb", "async": False}
    call = get(name).creation(SETTINGS, request, "https://th.example/callbacks/x/tok")
    assert call is not None
    assert (call.url, call.token, call.token_setting) == (url, TOKEN, "ACEDATA_API_TOKEN")
    assert call.body == {
        "prompt": "p",
        "callback_url": "https://th.example/callbacks/x/tok",
        "async": True,
    }


def test_seedance2_sends_the_request_without_any_callback_url() -> None:
    request = {"model": "m", "prompt": "p", "callback_url": "https://elsewhere/cb"}
    call = get("seedance2").creation(SETTINGS, request, "https://th.example/callbacks/x/tok")
    assert call is not None
    assert call.url == "https://s2.example/v1/video/generations"
    assert (call.token, call.token_setting) == ("s2-key", "SEEDANCE2_API_KEY")
    assert call.body == {"model": "m", "prompt": "p"}


@pytest.mark.parametrize("name", ["seedream", "seedance", "dreamina", "seedance2"])
def test_no_token_no_call(name: str) -> None:
    assert get(name).creation(Settings(), {"prompt": "p"}, "https://th.example/cb") is None
