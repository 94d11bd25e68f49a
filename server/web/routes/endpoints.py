"""``/endpoints``: where events are pushed, their attempts, redelivery and recovery."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any, cast, get_args

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from server.core.delivery_schedule import Outcome
from server.core.types import iso_time
from server.delivery import signing
from server.delivery.endpoints import (
    InvalidEndpoint,
    check_description,
    check_events,
    check_url,
    view,
)
from server.errors import BadRequest, Conflict, NotFound
from server.observe.logs import event
from server.store import Store
from server.store.webhooks import Attempt, Endpoint
from server.web.auth import require_api_token
from server.web.openapi import doc
from server.web.params import one_of, whole_number
from server.web.routes.body import read_json
from server.web.runtime import runtime

log = logging.getLogger("taskhook.endpoints")

BODY_LIMIT = 64 * 1024
MAX_LIMIT = 500
FIELDS = frozenset({"url", "events", "description"})


def attempt_view(attempt: Attempt) -> dict[str, Any]:
    return {
        "event_id": attempt.event_id,
        "attempt": attempt.attempt,
        "attempted_at": iso_time(attempt.attempted_at),
        "outcome": attempt.outcome,
        "response_status": attempt.response_status,
        "duration_ms": attempt.duration_ms,
        "response": attempt.response,
        "error": attempt.error,
    }


async def _endpoint(store: Store, endpoint_id: str) -> Endpoint:
    found = await store.get_endpoint(endpoint_id)
    if found is None:
        raise NotFound(f"no endpoint has id {endpoint_id!r}", code="unknown_endpoint")
    return found


def _enabled(endpoint: Endpoint) -> None:
    if endpoint.disabled:
        raise Conflict(
            f"endpoint {endpoint.id} is disabled ({endpoint.disabled_reason}); "
            f"POST /endpoints/{endpoint.id}/enable first",
            code="endpoint_disabled",
        )


@doc(
    "Add an endpoint that events are POSTed to",
    body='{"url": "http(s)://...", "events"?: [types] (absent: every type), "description"?}',
    responses={
        201: "the endpoint, with its signing secret (shown only now)",
        400: "not JSON, or a field that cannot be used",
        413: "body too large",
    },
    auth=True,
)
async def create_endpoint(request: Request) -> JSONResponse:
    require_api_token(request)
    payload = await read_json(request, BODY_LIMIT)
    if not isinstance(payload, dict):
        raise BadRequest(
            'the body must be an object: {"url", "events"?, "description"?}',
            code="invalid_endpoint",
        )
    unknown = sorted(set(payload) - FIELDS)
    if unknown:
        raise BadRequest(
            f"unknown field {unknown[0]!r}; an endpoint has url, events and description",
            code="invalid_endpoint",
        )
    try:
        url = check_url(payload.get("url"))
        events = check_events(payload.get("events"))
        description = check_description(payload.get("description"))
    except InvalidEndpoint as exc:
        raise BadRequest(str(exc), code="invalid_endpoint") from None
    secret = signing.new_secret()
    endpoint = await runtime(request).store.create_endpoint(url, events, description, secret)
    event(log, "endpoint_created", endpoint=endpoint.id, events=events)
    return JSONResponse(view(endpoint, secret=secret), status_code=201)


@doc(
    "Every endpoint, the oldest first (no secrets)",
    responses={200: "the endpoints"},
    auth=True,
)
async def list_endpoints(request: Request) -> JSONResponse:
    require_api_token(request)
    endpoints = await runtime(request).store.list_endpoints()
    return JSONResponse({"items": [view(e) for e in endpoints]})


@doc(
    "One endpoint (no secret)",
    responses={200: "the endpoint", 404: "unknown endpoint"},
    auth=True,
)
async def get_endpoint(request: Request) -> JSONResponse:
    require_api_token(request)
    endpoint = await _endpoint(runtime(request).store, request.path_params["endpoint_id"])
    return JSONResponse(view(endpoint))


@doc(
    "Remove an endpoint, with its pending messages and attempts",
    responses={204: "removed", 404: "unknown endpoint"},
    auth=True,
)
async def delete_endpoint(request: Request) -> Response:
    require_api_token(request)
    endpoint_id = request.path_params["endpoint_id"]
    if not await runtime(request).store.delete_endpoint(endpoint_id):
        raise NotFound(f"no endpoint has id {endpoint_id!r}", code="unknown_endpoint")
    event(log, "endpoint_removed", endpoint=endpoint_id)
    return Response(status_code=204)


@doc(
    "A new signing secret; the current one keeps signing beside it for 24 h",
    responses={
        200: "the endpoint with its new secret (shown only now)",
        404: "unknown endpoint",
    },
    auth=True,
)
async def rotate_secret(request: Request) -> JSONResponse:
    require_api_token(request)
    endpoint_id = request.path_params["endpoint_id"]
    secret = signing.new_secret()
    rotated = await runtime(request).store.rotate_endpoint_secret(
        endpoint_id, secret, signing.ROTATION_OVERLAP
    )
    if rotated is None:
        raise NotFound(f"no endpoint has id {endpoint_id!r}", code="unknown_endpoint")
    event(log, "endpoint_secret_rotated", endpoint=endpoint_id)
    body = view(rotated, secret=secret)
    body["previous_secret_expires_at"] = iso_time(rotated.previous_until)
    return JSONResponse(body)


@doc(
    "Re-enable a disabled endpoint: it gets the events committed from now on",
    responses={200: "the endpoint", 404: "unknown endpoint"},
    auth=True,
)
async def enable_endpoint(request: Request) -> JSONResponse:
    require_api_token(request)
    endpoint_id = request.path_params["endpoint_id"]
    enabled = await runtime(request).store.enable_endpoint(endpoint_id)
    if enabled is None:
        raise NotFound(f"no endpoint has id {endpoint_id!r}", code="unknown_endpoint")
    event(log, "endpoint_enabled", endpoint=endpoint_id)
    return JSONResponse(view(enabled))


@doc(
    "An endpoint's attempts, newest first",
    query=("outcome", "limit", "cursor"),
    responses={
        200: "a page of attempts and next_cursor",
        400: "bad outcome, limit or cursor",
        404: "unknown endpoint",
    },
    auth=True,
)
async def list_attempts(request: Request) -> JSONResponse:
    require_api_token(request)
    q = request.query_params
    outcome = cast(Outcome | None, one_of(q.get("outcome"), "outcome", get_args(Outcome)))
    limit = whole_number(q.get("limit"), "limit", default=50, low=1, high=MAX_LIMIT)
    store = runtime(request).store
    endpoint = await _endpoint(store, request.path_params["endpoint_id"])
    attempts, next_cursor = await store.list_attempts(
        endpoint.id, outcome=outcome, limit=limit, cursor=q.get("cursor") or None
    )
    return JSONResponse({"items": [attempt_view(a) for a in attempts], "next_cursor": next_cursor})


@doc(
    "Send one event again: one more attempt, outside the retry schedule",
    query=("endpoint",),
    responses={
        202: "queued; the endpoints that get it",
        404: "unknown event or endpoint",
        409: "the endpoint is disabled, or does not subscribe to the event's type",
    },
    auth=True,
)
async def redeliver(request: Request) -> JSONResponse:
    require_api_token(request)
    store = runtime(request).store
    event_id = request.path_params["event_id"]
    endpoint_id = request.query_params.get("endpoint") or None
    endpoint = await _endpoint(store, endpoint_id) if endpoint_id is not None else None
    if endpoint is not None:
        _enabled(endpoint)
    queued = await store.redeliver_event(event_id, endpoint_id)
    if queued is None:
        raise NotFound(f"no event has id {event_id!r} (or it is past EVENT_RETENTION)")
    if endpoint is not None and not endpoint.subscribes(queued.event_type):
        raise Conflict(
            f"endpoint {endpoint.id} does not subscribe to {queued.event_type}",
            code="not_subscribed",
        )
    event(log, "event_redelivered", event_id=event_id, endpoints=queued.endpoints)
    return JSONResponse({"event_id": event_id, "endpoints": queued.endpoints}, status_code=202)


def parse_since(text: str | None) -> float:
    if not text:
        raise BadRequest(
            "'since' is required: an ISO 8601 time, e.g. 2026-11-22T10:00:00Z",
            code="invalid_filter",
        )
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise BadRequest(
            f"since {text[:60]!r} is not an ISO 8601 time, e.g. 2026-11-22T10:00:00Z",
            code="invalid_filter",
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


@doc(
    "Send again every event that failed for the endpoint since a time",
    query=("since",),
    responses={
        202: "how many events were queued again",
        400: "missing or bad since",
        404: "unknown endpoint",
        409: "the endpoint is disabled",
    },
    auth=True,
)
async def recover(request: Request) -> JSONResponse:
    require_api_token(request)
    since = parse_since(request.query_params.get("since"))
    store = runtime(request).store
    endpoint = await _endpoint(store, request.path_params["endpoint_id"])
    _enabled(endpoint)
    count = await store.recover_endpoint(endpoint.id, since)
    event(log, "endpoint_recovered", endpoint=endpoint.id, since=iso_time(since), events=count)
    return JSONResponse(
        {"endpoint": endpoint.id, "since": iso_time(since), "recovered": count}, status_code=202
    )


ROUTES = [
    Route("/endpoints", create_endpoint, methods=["POST"], name="create_endpoint"),
    Route("/endpoints", list_endpoints, methods=["GET"], name="list_endpoints"),
    Route("/endpoints/{endpoint_id}", get_endpoint, methods=["GET"], name="get_endpoint"),
    Route("/endpoints/{endpoint_id}", delete_endpoint, methods=["DELETE"], name="delete_endpoint"),
    Route(
        "/endpoints/{endpoint_id}/rotate-secret",
        rotate_secret,
        methods=["POST"],
        name="rotate_endpoint_secret",
    ),
    Route(
        "/endpoints/{endpoint_id}/enable", enable_endpoint, methods=["POST"], name="enable_endpoint"
    ),
    Route(
        "/endpoints/{endpoint_id}/attempts",
        list_attempts,
        methods=["GET"],
        name="list_endpoint_attempts",
    ),
    Route("/endpoints/{endpoint_id}/recover", recover, methods=["POST"], name="recover_endpoint"),
    Route("/events/{event_id}/redeliver", redeliver, methods=["POST"], name="redeliver_event"),
]
