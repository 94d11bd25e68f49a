"""``POST /submit/{provider}``: create a task upstream through taskhook; ``GET /submits/{id}``.

The route checks the request and answers; what a submit does is
``server.submission``'s.
"""

from __future__ import annotations

import json
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from server import submission
from server.core.types import iso_time
from server.errors import BadRequest, NotFound
from server.providers import PROVIDERS
from server.web.auth import require_api_token
from server.web.openapi import doc
from server.web.routes.body import read_json
from server.web.runtime import runtime

SUBMIT_BODY_LIMIT = 16 * 1024 * 1024
#: The longest Idempotency-Key accepted.
KEY_LIMIT = 255
BODY_KEYS = frozenset({"request", "metadata"})


def idempotency_key(value: str | None) -> str | None:
    """The ``Idempotency-Key`` header: 1 to 255 visible ASCII characters (spaces inside)."""
    if value is None:
        return None
    key = value.strip()
    if not key or len(key) > KEY_LIMIT or not all(" " <= c <= "~" for c in key):
        raise BadRequest(
            f"Idempotency-Key must be 1 to {KEY_LIMIT} visible ASCII characters,"
            " e.g. a UUID; send a new one for each new request",
            code="invalid_idempotency_key",
        )
    return key


def submit_body(payload: Any) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """``(request, metadata)`` of ``{"request": {...}, "metadata"?: {...}}``, or 400."""
    if not isinstance(payload, dict):
        raise BadRequest(
            'the body must be an object: {"request": {...}, "metadata"?: {...}}',
            code="invalid_submit",
        )
    extra = sorted(set(payload) - BODY_KEYS)
    if extra:
        raise BadRequest(
            f"the body has unknown keys {extra}; it takes only 'request' (the provider's"
            " creation body) and 'metadata'",
            code="invalid_submit",
        )
    request, metadata = payload.get("request"), payload.get("metadata")
    if not isinstance(request, dict) or not request:
        raise BadRequest(
            "'request' must be a non-empty object: the body the provider's creation endpoint"
            " takes (see README, Submit through taskhook)",
            code="invalid_submit",
        )
    if metadata is not None and not isinstance(metadata, dict):
        raise BadRequest("'metadata' must be an object", code="invalid_submit")
    return request, metadata


@doc(
    "Create a task upstream and track it from the first second",
    body='{"request": {the provider\'s creation body}, "metadata"?: {...}};'
    " optional header Idempotency-Key",
    responses={
        201: "created upstream and registered: the merged task",
        400: "bad body or Idempotency-Key, or upstream refused the request (its code, message)",
        404: "unknown provider",
        409: "submit_in_progress: the first request with this Idempotency-Key is in flight",
        413: "body too large",
        422: "idempotency_key_reused: the key was used with another request",
        429: "upstream rate limit (Retry-After)",
        502: "upstream refused the token, failed (5xx) or could not be reached; nothing created",
        503: "provider_not_configured: its token setting is empty; nothing sent",
        504: "submit_outcome_unknown: no answer within SUBMIT_TIMEOUT; never resent",
    },
    auth=True,
)
async def submit_task(request: Request) -> Response:
    require_api_token(request)
    name = request.path_params["provider"]
    provider = PROVIDERS.get(name)
    if provider is None:
        raise NotFound(f"unknown provider {name!r}; expected one of {', '.join(PROVIDERS)}")
    key = idempotency_key(request.headers.get("idempotency-key"))
    body, metadata = submit_body(await read_json(request, SUBMIT_BODY_LIMIT))
    rt = runtime(request)
    reply = await submission.submit(
        rt.store, rt.settings, rt.secrets, provider, body, metadata, key
    )
    headers = {"Idempotent-Replayed": "true"} if reply.replayed else {}
    return Response(
        reply.body,
        reply.status,
        headers={**reply.headers, **headers},
        media_type="application/json",
    )


@doc(
    "A submit's record: what upstream answered, or that its outcome is unknown",
    responses={200: "the record", 404: "unknown submit"},
    auth=True,
)
async def get_submit(request: Request) -> JSONResponse:
    require_api_token(request)
    raw = request.path_params["submit_id"]
    found = None
    if raw.isascii() and raw.isdigit() and len(raw) <= 19:
        found = await runtime(request).store.get_submit(int(raw))
    if found is None:
        raise NotFound(f"no submit {raw!r} is known")
    now = time.time()
    state = "answered" if found.answered else "lapsed" if found.settled(now) else "in_flight"
    return JSONResponse(
        {
            "submit_id": found.id,
            "provider": found.provider,
            "idempotency_key": found.key,
            "state": state,
            "status": found.status if found.settled(now) else None,
            "answer": json.loads(found.body) if found.settled(now) else None,
            "task_id": found.task_id,
            "trace_id": found.trace_id,
            "created_at": iso_time(found.created_at),
            "answered_at": iso_time(found.answered_at),
        }
    )


ROUTES = [
    Route("/submit/{provider}", submit_task, methods=["POST"], name="submit_task"),
    Route("/submits/{submit_id}", get_submit, methods=["GET"], name="get_submit"),
]
