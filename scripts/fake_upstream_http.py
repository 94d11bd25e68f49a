"""The fake upstream's HTTP pieces every route uses.

JSON answers (in AceData's and Seedance 2.0's error shapes, injected faults
included), the bearer check, reading a body that may not be JSON, holding a
call open (until the client hangs up or the fake stops) and dropping a
connection without an answer.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
import uuid
from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from scripts.fake_upstream_state import FakeState


class ConnectionDropped(RuntimeError):
    """A ``close`` outcome outside uvicorn, where there is no connection to close."""


def json_answer(
    content: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    # Echoes what clients sent (lone surrogates, NaN), which JSONResponse refuses to render.
    text = json.dumps(content, ensure_ascii=True, separators=(",", ":"))
    return Response(text, status, headers=headers, media_type="application/json")


def ace_error(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    body = {"success": False, "error": {"code": code, "message": message}}
    return JSONResponse({**body, "trace_id": str(uuid.uuid4())}, status, headers=headers)


def s2_error(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    code = "invalid_api_key" if code == "invalid_token" else code
    return JSONResponse({"code": code, "message": message, "data": None}, status, headers=headers)


def bad_request(message: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": {"code": "bad_request", "message": message}}, status)


def bearer_ok(request: Request, expected: str) -> bool:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        token.strip().encode(), expected.encode()
    )


def fake_state(request: Request) -> FakeState:
    return request.app.state.fake


async def json_body(request: Request) -> Any:
    try:
        return await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None


async def hold(request: Request, state: FakeState, seconds: float) -> bool:
    """Wait ``seconds``, or less if the client hangs up or the fake stops; True if it all passed."""
    if seconds <= 0:
        return True

    async def client_gone() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    waiters = {asyncio.ensure_future(client_gone()), asyncio.ensure_future(state.stopping.wait())}
    try:
        done, _ = await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
    return not done


async def drop_connection(request: Request) -> Response:
    """Close the client's connection without an answer (uvicorn); elsewhere ConnectionDropped."""
    # uvicorn's receive is a method of the request cycle, which holds the connection's transport.
    transport = getattr(getattr(request.receive, "__self__", None), "transport", None)
    if not isinstance(transport, asyncio.Transport):
        raise ConnectionDropped("no connection to close outside uvicorn")
    transport.close()
    while (await request.receive())["type"] != "http.disconnect":
        pass  # once uvicorn has seen the close, it sends nothing more
    return Response(status_code=204)


def answer_deadline(state: FakeState) -> float:
    """When a tasks call that arrives now answers: ``--latency`` from its arrival.

    The fake's own work (finding tasks, building and encoding the answer)
    happens inside that time, not after it, so an upstream of latency L
    answers in L whatever this one process costs per call; a benchmark can
    then compare a pass with ``calls x latency`` (``until`` waits out the rest).
    """
    return time.monotonic() + state.config.latency


async def until(deadline: float) -> None:
    """Wait for ``deadline`` (a ``time.monotonic()`` time); at once when it has passed."""
    left = deadline - time.monotonic()
    if left > 0:
        await asyncio.sleep(left)


async def injected_fault(request: Request, provider: str, kind: str) -> Response | None:
    """The answer of an injected fault for this call, or None to answer normally."""
    state = fake_state(request)
    fault = state.draw_fault(provider)
    error = s2_error if provider == "seedance2" else ace_error
    if fault is None:
        return None
    if fault == "429":
        headers = {"Retry-After": f"{state.retry_after:g}"}
        return error(429, "too_many_requests", "Too many requests, slow down.", headers)
    if fault == "500":
        return error(500, "api_error", "fetch failed")
    if fault == "401":
        return error(401, "invalid_token", "fake upstream: injected auth failure")
    if fault == "timeout":
        await hold(request, state, state.timeout_hold)
        return error(504, "timeout", "fake upstream: injected timeout")
    if fault == "malformed":
        return Response("<html><body>502 Bad Gateway</body></html>", media_type="text/html")
    if kind == "retrieve_batch":
        ids = (await json_body(request) or {}).get("ids") or []
        return JSONResponse({"items": [{} for _ in ids], "count": len(ids)})
    return JSONResponse({})


def unauthorized(state: FakeState, provider: str) -> JSONResponse:
    """A call without the right bearer: counted, and answered in the provider's 401 shape."""
    state.unauthorized[provider] += 1
    if provider == "seedance2":
        return s2_error(401, "invalid_api_key", "invalid or missing API key")
    return ace_error(401, "invalid_token", "Unauthorized, invalid or missing authorization token.")
