"""``/dashboard/endpoints``: webhook endpoints, each with its recent attempts and failures.

A page per endpoint shows its state (disabled and why), what waits for it, its
recent failures and attempts, with a button to redeliver an event and one to
re-enable a disabled endpoint. Forms carry the session's CSRF token, like the
quarantine's replay.
"""

from __future__ import annotations

import logging
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from server.observe.logs import event
from server.store.webhooks import Endpoint
from server.web.routes.dashboard_auth import (
    Viewer,
    message_page,
    operator,
    page,
    page_route,
    signed_in,
)
from server.web.runtime import runtime

log = logging.getLogger("taskhook.dashboard")

RECENT = 50


@signed_in
async def endpoints(request: Request, who: Viewer) -> Response:
    store = runtime(request).store
    backlog = {b.endpoint_id: b for b in await store.webhook_backlog()}
    rows = [(e, backlog.get(e.id)) for e in await store.list_endpoints()]
    return page(request, "endpoints.html", {"viewer": who, "rows": rows})


async def _endpoint(request: Request, who: Viewer) -> Endpoint | Response:
    """The endpoint the path names, or the page saying there is none."""
    endpoint_id = request.path_params["endpoint_id"]
    endpoint = await runtime(request).store.get_endpoint(endpoint_id)
    return endpoint if endpoint is not None else _missing(request, who, endpoint_id)


def _missing(request: Request, who: Viewer, endpoint_id: str) -> Response:
    message = f"No endpoint has id {endpoint_id!r} (removed?)."
    return message_page(request, who, "No such endpoint", message, 404)


@signed_in
async def endpoint_page(request: Request, who: Viewer) -> Response:
    store = runtime(request).store
    endpoint = await _endpoint(request, who)
    if isinstance(endpoint, Response):
        return endpoint
    attempts, _ = await store.list_attempts(endpoint.id, limit=RECENT)
    failures, _ = await store.list_attempts(endpoint.id, outcome="failed", limit=RECENT)
    backlog = next((b for b in await store.webhook_backlog() if b.endpoint_id == endpoint.id), None)
    q = request.query_params
    return page(
        request,
        "endpoint.html",
        {
            "viewer": who,
            "endpoint": endpoint,
            "backlog": backlog,
            "attempts": attempts,
            "failures": failures,
            "redelivered": q.get("redelivered"),
            "enabled": q.get("enabled") == "1",
            "refused": q.get("refused"),
        },
    )


async def redeliver(request: Request) -> Response:
    who = await operator(request, "change endpoints")
    if isinstance(who, Response):
        return who
    endpoint = await _endpoint(request, who)
    if isinstance(endpoint, Response):
        return endpoint
    event_id = request.path_params["event_id"]
    queued = (
        None
        if endpoint.disabled
        else await runtime(request).store.redeliver_event(event_id, endpoint.id)
    )
    if queued is None or not queued.endpoints:
        answer = {"refused": event_id}
    else:
        event(log, "dashboard_redeliver", endpoint=endpoint.id, event_id=event_id)
        answer = {"redelivered": event_id}
    return RedirectResponse(f"/dashboard/endpoints/{endpoint.id}?{urlencode(answer)}", 303)


async def enable(request: Request) -> Response:
    who = await operator(request, "change endpoints")
    if isinstance(who, Response):
        return who
    endpoint_id = request.path_params["endpoint_id"]
    enabled = await runtime(request).store.enable_endpoint(endpoint_id)
    if enabled is None:
        return _missing(request, who, endpoint_id)
    event(log, "dashboard_enable", endpoint=enabled.id)
    return RedirectResponse(f"/dashboard/endpoints/{enabled.id}?enabled=1", status_code=303)


ROUTES = [
    page_route("/dashboard/endpoints", endpoints),
    page_route("/dashboard/endpoints/{endpoint_id}", endpoint_page, name="dashboard_endpoint"),
    page_route("/dashboard/endpoints/{endpoint_id}/redeliver/{event_id}", redeliver, "POST"),
    page_route("/dashboard/endpoints/{endpoint_id}/enable", enable, "POST"),
]
