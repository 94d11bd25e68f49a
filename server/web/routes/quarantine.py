"""``/quarantine``: deliveries kept but not merged, and their replay."""

from __future__ import annotations

import base64
import logging
from typing import Any

from starlette.requests import Request
from starlette.routing import Route

from server.core.types import iso_time
from server.errors import NotFound, Unprocessable
from server.ingest import Quarantined, receive
from server.observe.logs import event
from server.store import QuarantineItem, Store
from server.web import params
from server.web.auth import require_api_token
from server.web.openapi import doc
from server.web.responses import JSONResponse
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
    },
    auth=True,
)
async def list_quarantine(request: Request) -> JSONResponse:
    require_api_token(request)
    q = request.query_params
    limit = params.whole_number(q.get("limit"), "limit", default=50, low=1, high=500)
    page, next_cursor = await runtime(request).store.list_quarantine(limit, q.get("cursor") or None)
    return JSONResponse({"items": [quarantine_view(i) for i in page], "next_cursor": next_cursor})


@doc(
    "Run a quarantined delivery through parse and merge again",
    responses={
        200: "merged and removed from quarantine",
        404: "no such quarantined delivery",
        409: "its task is held under another provider; it stays in quarantine",
        422: "still not mergeable",
    },
    auth=True,
)
async def replay(request: Request) -> JSONResponse:
    require_api_token(request)
    store = runtime(request).store
    item = await quarantined(request)
    try:
        outcome = await receive(store, item.provider, item.body, quarantine_id=item.id)
    except Quarantined as q:
        raise Unprocessable(
            f"delivery {item.id} still cannot be merged: {q.error.message}; it stays in quarantine",
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


async def find_quarantined(store: Store, raw_id: str) -> QuarantineItem | None:
    """The quarantined delivery with this id, or None (also for ids no row can have)."""
    number = params.row_id(raw_id)
    return await store.get_quarantined(number) if number is not None else None


async def discard_item(
    store: Store, item: QuarantineItem, logger: logging.Logger, name: str
) -> bool:
    """Delete a quarantined delivery for good and log it as ``name``; False if already gone."""
    if not await store.discard_quarantined(item.id):
        return False
    event(
        logger,
        name,
        provider=item.provider,
        quarantine_id=item.id,
        reason=item.reason,
        bytes=len(item.body),
    )
    return True


async def quarantined(request: Request) -> QuarantineItem:
    """The quarantined delivery the path names, or 404 (also for ids no row can have)."""
    raw_id = request.path_params["quarantine_id"]
    item = await find_quarantined(runtime(request).store, raw_id)
    if item is None:
        raise NotFound(f"no quarantined delivery has id {raw_id[:40]!r} (replayed or discarded?)")
    return item


@doc(
    "Discard a quarantined delivery that will never merge",
    responses={
        200: "discarded",
        404: "no such quarantined delivery",
    },
    auth=True,
)
async def discard(request: Request) -> JSONResponse:
    require_api_token(request)
    item = await quarantined(request)
    if not await discard_item(runtime(request).store, item, log, "quarantine_discarded"):
        raise NotFound(f"quarantined delivery {item.id} was removed meanwhile")
    return JSONResponse({"ok": True, "discarded": item.id})


ROUTES = [
    Route("/quarantine", list_quarantine, methods=["GET"], name="list_quarantine"),
    Route("/quarantine/{quarantine_id}/replay", replay, methods=["POST"], name="replay"),
    Route("/quarantine/{quarantine_id}", discard, methods=["DELETE"], name="discard_quarantined"),
]
