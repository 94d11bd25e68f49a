"""``/dashboard/quarantine``: deliveries kept but not merged, with replay and discard.

The page lists the quarantine newest first; each row's forms (carrying the
session's CSRF token) replay a delivery through the one data path or discard
it for good. The lookup and the discard are the API's (``routes.quarantine``).
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from server.ingest import Quarantined, receive
from server.observe.logs import event
from server.store import QuarantineItem
from server.web import params
from server.web.routes.dashboard_auth import (
    PAGE_SIZE,
    Viewer,
    message_page,
    operator,
    page,
    page_route,
    pretty_body,
    signed_in,
)
from server.web.routes.quarantine import discard_item, find_quarantined
from server.web.runtime import runtime

log = logging.getLogger("taskhook.dashboard")


@signed_in
async def quarantine(request: Request, who: Viewer) -> Response:
    store = runtime(request).store
    q = request.query_params
    replayed = params.row_cursor(q.get("replayed"), "replayed")
    discarded = params.row_cursor(q.get("discarded"), "discarded")
    failed_id = params.row_cursor(q.get("failed"), "failed")
    items, next_cursor = await store.list_quarantine(PAGE_SIZE, q.get("cursor") or None)
    shown = [
        {**asdict(item), "pretty": pretty_body(item.body), "bytes": len(item.body)}
        for item in items
    ]
    older = f"?{urlencode({'cursor': next_cursor})}" if next_cursor else None
    failed = await store.get_quarantined(failed_id) if failed_id is not None else None
    return page(
        request,
        "quarantine.html",
        {
            "viewer": who,
            "items": shown,
            "older": older,
            "replayed": replayed,
            "replayed_task": q.get("task"),
            "discarded": discarded,
            "failed": failed,
        },
    )


async def quarantine_action(request: Request) -> QuarantineItem | Response:
    """The quarantined item a signed-in operator's form names, or the page to answer."""
    who = await operator(request, "change the quarantine")
    if isinstance(who, Response):
        return who
    raw_id = request.path_params["quarantine_id"]
    item = await find_quarantined(runtime(request).store, raw_id)
    if item is None:
        message = (
            f"No quarantined delivery has id {raw_id[:40]!r} (already replayed or discarded?)."
        )
        return message_page(request, who, "Not in quarantine", message, 404)
    return item


async def replay(request: Request) -> Response:
    item = await quarantine_action(request)
    if isinstance(item, Response):
        return item
    try:
        outcome = await receive(
            runtime(request).store, item.provider, item.body, quarantine_id=item.id
        )
    except Quarantined as q:
        event(
            log,
            "dashboard_replay_failed",
            logging.WARNING,
            provider=item.provider,
            quarantine_id=item.id,
            reason=q.error.code,
        )
        return RedirectResponse(f"/dashboard/quarantine?failed={item.id}", status_code=303)
    event(
        log,
        "dashboard_replay",
        provider=item.provider,
        task_id=outcome.task_id,
        quarantine_id=item.id,
        status=outcome.status,
    )
    query = urlencode({"replayed": item.id, "task": outcome.task_id})
    return RedirectResponse(f"/dashboard/quarantine?{query}", status_code=303)


async def discard(request: Request) -> Response:
    """Drop a quarantined body that will never parse (a probe, a wrong endpoint's payload)."""
    item = await quarantine_action(request)
    if isinstance(item, Response):
        return item
    await discard_item(runtime(request).store, item, log, "dashboard_discard")
    return RedirectResponse(f"/dashboard/quarantine?discarded={item.id}", status_code=303)


ROUTES = [
    page_route("/dashboard/quarantine", quarantine),
    page_route("/dashboard/quarantine/{quarantine_id}/replay", replay, "POST"),
    page_route("/dashboard/quarantine/{quarantine_id}/discard", discard, "POST"),
]
