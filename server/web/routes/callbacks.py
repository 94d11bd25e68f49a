"""``POST /callbacks/{provider}/{token}``: what upstream calls."""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.routing import Route

from server.core.tokens import token_accepted
from server.errors import BodyTooLarge, NotFound, ProviderMismatch, Unauthorized
from server.ingest import Quarantined, receive
from server.observe.metrics import CALLBACKS, QUARANTINED
from server.providers import PROVIDERS
from server.web.openapi import doc
from server.web.responses import JSONResponse
from server.web.routes.body import read_limited
from server.web.runtime import runtime

log = logging.getLogger("taskhook.callbacks")


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
    provider = request.path_params["provider"]
    rt = runtime(request)
    if provider not in PROVIDERS:
        CALLBACKS.labels("unknown", "unknown_provider").inc()
        # The name is not echoed: a misplaced callback token may sit where it was expected.
        raise NotFound(
            f"unknown provider in the callback path; expected one of {', '.join(PROVIDERS)}"
        )
    token = request.path_params["token"]
    if not token_accepted(token, provider, rt.secrets.callback_secrets) and not (
        await rt.reload_secrets() and token_accepted(token, provider, rt.secrets.callback_secrets)
    ):
        CALLBACKS.labels(provider, "unauthorized").inc()
        raise Unauthorized(
            "the token in this callback URL is not valid for this provider; "
            "get the right URL with 'python -m server callback-url PROVIDER'"
        )
    try:
        body = await read_limited(request, rt.settings.max_body_bytes)
    except BodyTooLarge:
        CALLBACKS.labels(provider, "too_large").inc()
        raise
    try:
        outcome = await receive(rt.store, provider, body, headers=request.headers)
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
        "callback provider=%s task_id=%s status=%s duplicate=%s changed=%s",
        provider,
        outcome.task_id,
        outcome.status,
        outcome.duplicate,
        outcome.changed,
    )
    return JSONResponse(
        {
            "ok": True,
            "task_id": outcome.task_id,
            "status": outcome.status,
            "duplicate": outcome.duplicate,
        }
    )


ROUTES = [
    Route("/callbacks/{provider}/{token}", receive_callback, methods=["POST"], name="callback"),
]
