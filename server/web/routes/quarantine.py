"""``/quarantine``: deliveries kept but not merged, and their replay."""

from __future__ import annotations

import base64
import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from server.core.types import iso_time
from server.errors import BadRequest, NotFound, Unprocessable
from server.ingest import Quarantined, receive
from server.store import QuarantineItem
from server.web.auth import require_api_token
from server.web.openapi import doc
from server.web.runtime import runtime

log = logging.getLogger("taskhook.quarantine")


def quarantine_view(item: QuarantineItem) -> dict[str, Any]:
    body = item.body
    try:
        text, encoding = body.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        text, encoding = base64.b64encode(body).decode(), "base64"
    return {
        "id": item.id,
        "provider": item.provider,
        "received_at": iso_time(item.received_at),
        "reason": item.reason,
        "message": item.message,
        "headers": dict(item.headers),
        "sha256": item.sha256,
        "bytes": len(body),
        "body": text,
        "body_encoding": encoding,
    }


@doc(
    "Deliveries kept but not merged, newest first",
    query=("limit", "cursor"),
    responses={
        200: "quarantined deliveries",
        400: "bad limit or cursor",
        401: "no or wrong bearer",
    },
    auth=True,
)
async def list_quarantine(request: Request) -> JSONResponse:
    require_api_token(request)
    q = request.query_params
    raw_limit, raw_cursor = q.get("limit", "50"), q.get("cursor")
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= 500:
        raise BadRequest(
            f"limit {raw_limit!r} must be a whole number from 1 to 500", code="invalid_filter"
        )
    page, next_cursor = await runtime(request).store.list_quarantine(
        int(raw_limit), raw_cursor or None
    )
    return JSONResponse({"items": [quarantine_view(i) for i in page], "next_cursor": next_cursor})


@doc(
    "Run a quarantined delivery through parse and merge again",
    responses={
        200: "merged and removed from quarantine",
        401: "no or wrong bearer",
        404: "no such quarantined delivery",
        409: "its task is held under another provider; it stays in quarantine",
        422: "still not mergeable",
    },
    auth=True,
)
async def replay(request: Request) -> JSONResponse:
    require_api_token(request)
    raw_id = request.path_params["quarantine_id"]
    store = runtime(request).store
    item = await store.get_quarantined(int(raw_id)) if raw_id.isdigit() else None
    if item is None:
        raise NotFound(f"no quarantined delivery has id {raw_id!r}")
    try:
        outcome = await receive(store, item.provider, item.body, quarantine_id=item.id)
    except Quarantined as q:
        raise Unprocessable(
            f"delivery {item.id} still cannot be merged: {q.error.message}; "
            "it stays in quarantine",
            code=q.error.code,
        ) from None
    log.info(
        "replayed quarantine_id=%s provider=%s task_id=%s status=%s",
        item.id,
        item.provider,
        outcome.task_id,
        outcome.status,
    )
    return JSONResponse(
        {"ok": True, "replayed": item.id, "task_id": outcome.task_id, "status": outcome.status}
    )


ROUTES = [
    Route("/quarantine", list_quarantine, methods=["GET"], name="list_quarantine"),
    Route("/quarantine/{quarantine_id}/replay", replay, methods=["POST"], name="replay"),
]
