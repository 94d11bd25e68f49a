"""``POST /callbacks/{provider}/{token}``: what upstream calls.

The busiest route by far, so it is served twice over: ``CallbackFastPath``
answers it as plain ASGI, before Starlette's router, request object and
exception middleware (the server's CPU per callback is what bounds its
rate); the Starlette route below serves the same function for everything
the fast path hands on (an app mounted under a root path) and documents it.
Both run ``accept``: the same checks in the same order (provider, token,
body size), the same metrics, log lines and error shapes.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette.requests import Request
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from server.core.tokens import token_accepted
from server.errors import (
    BadRequest,
    BodyTooLarge,
    NotFound,
    ProviderMismatch,
    TaskhookError,
    Unauthorized,
    error_body,
)
from server.ingest import KEPT_HEADERS, Quarantined, receive
from server.observe.logs import redact, redact_path
from server.observe.metrics import CALLBACKS, QUARANTINED
from server.providers import PROVIDERS
from server.store import IngestOutcome
from server.web.openapi import doc
from server.web.responses import JSONResponse, dump_json, encode_text
from server.web.routes.body import read_limited
from server.web.runtime import Runtime, runtime

log = logging.getLogger("taskhook.callbacks")

#: Reads the body, at most ``limit`` bytes (``BodyTooLarge`` past it).
BodyReader = Callable[[int], Awaitable[bytes]]


async def accept(
    rt: Runtime,
    provider: str,
    token: str,
    headers: Mapping[str, str],
    read: BodyReader,
    client: str,
) -> IngestOutcome:
    """Check, read, keep and merge one callback; a ``TaskhookError`` says what to answer.

    ``client``: ``host:port`` of the caller, as the access line names it.
    """
    if provider not in PROVIDERS:
        CALLBACKS.labels("unknown", "unknown_provider").inc()
        # The name is not echoed: a misplaced callback token may sit where it was expected.
        raise NotFound(
            f"unknown provider in the callback path; expected one of {', '.join(PROVIDERS)}"
        )
    if not token_accepted(token, provider, rt.secrets.callback_secrets) and not (
        await rt.reload_secrets() and token_accepted(token, provider, rt.secrets.callback_secrets)
    ):
        CALLBACKS.labels(provider, "unauthorized").inc()
        raise Unauthorized(
            "the token in this callback URL is not valid for this provider; "
            "get the right URL with 'python -m server callback-url PROVIDER'"
        )
    try:
        body = await read(rt.settings.max_body_bytes)
    except BodyTooLarge:
        CALLBACKS.labels(provider, "too_large").inc()
        raise
    try:
        outcome = await receive(rt.store, provider, body, headers=headers)
    except ProviderMismatch as exc:
        CALLBACKS.labels(provider, "provider_mismatch").inc()
        QUARANTINED.labels(provider, exc.code).inc()
        log.warning("callback refused provider=%s: %s", provider, exc.message)
        raise
    except Quarantined as q:
        CALLBACKS.labels(provider, "quarantined").inc()
        QUARANTINED.labels(provider, q.error.code).inc()
        log.warning(
            "callback quarantined provider=%s reason=%s quarantine_id=%s",
            provider,
            q.error.code,
            q.quarantine_id,
        )
        raise type(q.error)(
            f"{q.error.message}; the body was kept (quarantine id {q.quarantine_id})",
            provider=provider,
        ) from None
    CALLBACKS.labels(provider, "duplicate" if outcome.duplicate else "accepted").inc()
    log.info(
        "callback provider=%s task_id=%s status=%s duplicate=%s changed=%s client=%s",
        provider,
        outcome.task_id,
        outcome.status,
        outcome.duplicate,
        outcome.changed,
        client,
    )
    return outcome


def answer(outcome: IngestOutcome) -> dict[str, Any]:
    return {
        "ok": True,
        "task_id": outcome.task_id,
        "status": outcome.status,
        "duplicate": outcome.duplicate,
    }


def error_response(exc: TaskhookError) -> JSONResponse:
    """Any error of ours: its class says the status and the code."""
    # A message may quote what the client sent (an id, a path): no secret goes back out.
    return JSONResponse(error_body(exc.code, redact(exc.message)), exc.http_status, exc.headers)


@doc(
    "Receive a callback from upstream",
    body="the provider's callback body, or a tasks-endpoint wrapper",
    responses={
        200: "kept and merged (or a byte-identical repeat)",
        400: "not JSON (kept in quarantine)",
        401: "wrong token",
        404: "unknown provider",
        409: "the task is held under another provider (kept in quarantine)",
        413: "body over MAX_BODY_BYTES",
        422: "no recognisable task id (kept in quarantine)",
    },
)
async def receive_callback(request: Request) -> JSONResponse:
    async def read(limit: int) -> bytes:
        return await read_limited(request, limit)

    provider, token = request.path_params["provider"], request.path_params["token"]
    client = _client(request.scope)
    outcome = await accept(runtime(request), provider, token, request.headers, read, client)
    return JSONResponse(answer(outcome))


ROUTES = [
    Route("/callbacks/{provider}/{token}", receive_callback, methods=["POST"], name="callback"),
]


class CallbackFastPath:
    """ASGI: ``POST /callbacks/{provider}/{token}`` served here, anything else by ``app``.

    The path matches exactly when the route's pattern would (two non-empty
    segments after ``/callbacks/``). Errors get the shapes the app's
    exception handlers give them; an unexpected one is logged and answered
    500 ``internal_error``, as ``ServerErrorMiddleware`` would.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            parts = scope["path"].split("/")
            if len(parts) == 4 and parts[1] == "callbacks" and parts[2] and parts[3]:
                await self._callback(scope, receive, send, parts[2], parts[3])
                return
        await self.app(scope, receive, send)

    async def _callback(
        self, scope: Scope, receive: Receive, send: Send, provider: str, token: str
    ) -> None:
        headers = _kept_headers(scope["headers"])

        async def read(limit: int) -> bytes:
            return await _read_body(receive, headers.get("content-length", ""), limit)

        rt, client = scope["app"].state.taskhook, _client(scope)
        try:
            outcome = await accept(rt, provider, token, headers, read, client)
        except TaskhookError as exc:
            await error_response(exc)(scope, receive, send)
            return
        except Exception:
            log.exception("unexpected error on POST %s", redact_path(scope["path"]))
            message = "taskhook failed to handle this request; see its logs"
            await JSONResponse(error_body("internal_error", message), 500)(scope, receive, send)
            return
        body = encode_text(dump_json(answer(outcome)))
        _no_access_line(send)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-length", str(len(body)).encode()),
                    (b"content-type", b"application/json"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


_WANTED = frozenset(name.encode() for name in KEPT_HEADERS)


def _kept_headers(raw: list[tuple[bytes, bytes]]) -> dict[str, str]:
    """The request headers a delivery keeps (and content-length); the first of repeats wins."""
    found: dict[str, str] = {}
    for name, value in raw:
        if name in _WANTED:
            found.setdefault(name.decode("latin-1"), value.decode("latin-1"))
    return found


async def _read_body(receive: Receive, declared: str, limit: int) -> bytes:
    """The whole body from ASGI messages, or ``BodyTooLarge`` as soon as it passes ``limit``."""
    if declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"the body is {int(declared)} bytes; the limit is {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    more = True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            raise BadRequest("the client went away before the body was complete")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"the body is over the limit of {limit} bytes")
        chunks.append(chunk)
        more = message.get("more_body", False)
    return b"".join(chunks)


def _client(scope: Scope) -> str:
    """``host:port`` of the caller (after trusted forwarded headers), as uvicorn's access line."""
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else "unknown"


def _no_access_line(send: Send) -> None:
    """Spare uvicorn's access line for a callback answered 200: its callback line says it all.

    That line names the provider, the task, what changed and the client; the
    access line would repeat the client, the method, the (redacted) path and
    the status, at about the same cost again. ``send`` is uvicorn's
    request-response cycle's own method when nothing wrapped it (the fast path
    runs before any middleware that does); anything else keeps its access line.
    Errors keep theirs: their callback lines do not say the status.
    """
    cycle = getattr(send, "__self__", None)
    if getattr(cycle, "access_log", None) is True:
        cycle.access_log = False  # type: ignore[union-attr]
