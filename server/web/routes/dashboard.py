"""``/dashboard``: server-rendered pages for operators, signed in with ``API_TOKEN``.

Tasks, a task's timeline, stuck tasks, the quarantine with replay, provider
health. Sign-in and the page helpers live in ``dashboard_auth``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from server.core.render import task_json
from server.core.types import Status
from server.ingest import Quarantined, receive
from server.observe.logs import event
from server.observe.metrics import task_snapshot
from server.providers import PROVIDERS
from server.web.routes.dashboard_auth import (
    PAGE_SIZE,
    STYLESHEET,
    Viewer,
    csrf_ok,
    forbidden,
    http_url,
    login,
    login_form,
    logout,
    page,
    pretty_body,
    read_form,
    signed_in,
    viewer,
)
from server.web.runtime import Runtime, runtime

log = logging.getLogger("taskhook.dashboard")


# -- pages -------------------------------------------------------------------------


@signed_in
async def overview(request: Request, who: Viewer) -> Response:
    store = runtime(request).store
    q = request.query_params
    status = q.get("status") if q.get("status") in {s.value for s in Status} else None
    provider = q.get("provider") if q.get("provider") in PROVIDERS else None
    search = (q.get("q") or "").strip()
    raw_cursor = q.get("cursor", "")
    cursor = raw_cursor if raw_cursor.isdigit() else None
    next_cursor = None
    if search:
        found = await store.get_task(search)
        tasks = [found] if found else []
    else:
        tasks, next_cursor = await store.list_tasks(
            status=status, provider=provider, limit=PAGE_SIZE, cursor=cursor
        )
    filters = {"status": status or "", "provider": provider or ""}
    older = f"?{urlencode({**filters, 'cursor': next_cursor})}" if next_cursor else None
    return page(
        request,
        "overview.html",
        {
            "viewer": who,
            "snapshot": await task_snapshot(store),
            "tasks": tasks,
            "status": status,
            "provider": provider,
            "search": search,
            "paged": cursor is not None,
            "newest": f"?{urlencode(filters)}",
            "older": older,
        },
    )


@signed_in
async def task_page(request: Request, who: Viewer) -> Response:
    store = runtime(request).store
    task_id = request.path_params["task_id"]
    record = await store.get_task(task_id)
    if record is None:
        return page(
            request,
            "error.html",
            {
                "viewer": who,
                "title": "No such task",
                "message": f"No task {task_id!r} is known (ids match without case or dashes).",
            },
            404,
        )
    deliveries = [
        {**asdict(d), "pretty": pretty_body(d.body), "bytes": len(d.body)}
        for d in await store.deliveries(record.state.task_id)
    ]
    return page(
        request,
        "task.html",
        {
            "viewer": who,
            "task": record,
            "view": task_json(record),
            "results": [_result_view(r) for r in task_json(record)["results"]],
            "deliveries": deliveries,
        },
    )


def _result_view(result: dict[str, Any]) -> dict[str, Any]:
    archived = result.get("archived") if isinstance(result.get("archived"), dict) else None
    sha = archived.get("sha256") if archived else None
    local = f"/dashboard/files/{sha}" if isinstance(sha, str) and _is_sha256(sha) else None
    return {
        "kind": result.get("kind"),
        "url": result.get("url"),
        "link": http_url(result.get("url")),
        "local": local,
        "archived": archived,
        "archive_error": result.get("archive_error"),
    }


def _is_sha256(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)


@signed_in
async def stuck(request: Request, who: Viewer) -> Response:
    raw = request.query_params.get("hours", "1")
    try:
        hours = max(0.0, float(raw))
    except ValueError:
        hours = 1.0
    now = time.time()
    tasks = await runtime(request).store.stuck_tasks(now - hours * 3600, limit=200)
    return page(request, "stuck.html", {"viewer": who, "tasks": tasks, "hours": hours})


@signed_in
async def quarantine(request: Request, who: Viewer) -> Response:
    store = runtime(request).store
    q = request.query_params
    raw_cursor = q.get("cursor", "")
    items, next_cursor = await store.list_quarantine(
        PAGE_SIZE, raw_cursor if raw_cursor.isdigit() else None
    )
    shown = [
        {**asdict(item), "pretty": pretty_body(item.body), "bytes": len(item.body)}
        for item in items
    ]
    older = f"?cursor={next_cursor}" if next_cursor else None
    failed = None
    if q.get("failed", "").isdigit():
        failed = await store.get_quarantined(int(q["failed"]))
    return page(
        request,
        "quarantine.html",
        {
            "viewer": who,
            "items": shown,
            "older": older,
            "replayed": q.get("replayed") if q.get("replayed", "").isdigit() else None,
            "replayed_task": q.get("task"),
            "failed": failed,
        },
    )


async def replay(request: Request) -> Response:
    who = viewer(request)
    if who is None:
        return page(
            request,
            "error.html",
            {"title": "Not signed in", "message": "Sign in to replay deliveries."},
            401,
        )
    if not csrf_ok(request, who, await read_form(request)):
        return forbidden(request, who)
    store = runtime(request).store
    raw_id = request.path_params["quarantine_id"]
    item = await store.get_quarantined(int(raw_id)) if raw_id.isdigit() else None
    if item is None:
        return page(
            request,
            "error.html",
            {
                "viewer": who,
                "title": "Not in quarantine",
                "message": f"No quarantined delivery has id {raw_id!r} (already replayed?).",
            },
            404,
        )
    try:
        outcome = await receive(store, item.provider, item.body, quarantine_id=item.id)
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


@signed_in
async def health(request: Request, who: Viewer) -> Response:
    rt = runtime(request)
    services = await rt.services.statuses()
    return page(
        request,
        "health.html",
        {
            "viewer": who,
            "services": services,
            "reconciler": services.get("reconciler"),
            "provider_rows": provider_rows(rt, services.get("reconciler")),
        },
    )


def provider_rows(rt: Runtime, status: dict[str, Any] | None) -> list[dict[str, Any]]:
    """One row per provider: is it configured, and what the reconciler says about it."""
    reported = status.get("providers") if isinstance(status, dict) else None
    reported = reported if isinstance(reported, dict) else {}
    s = rt.settings
    rows = []
    for provider in PROVIDERS:
        configured = PROVIDERS[provider].configured(s)
        detail = reported.get(provider)
        rows.append(
            {
                "provider": provider,
                "configured": configured,
                "detail": detail if isinstance(detail, dict) else None,
                "text": None if isinstance(detail, dict) or detail is None else str(detail),
            }
        )
    return rows


# -- files and style ---------------------------------------------------------------


class ArchivedFile:
    """``/dashboard/files/{sha256}``: the archive's ``/files/{sha256}`` for a cookie session.

    An <img> or <video> tag cannot send a bearer header, so this checks the
    session and hands the request to the ``/files`` route with the bearer
    added; Range requests pass through untouched.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        sha = request.path_params.get("sha256", "")
        if viewer(request) is None or not _is_sha256(sha):
            status = 404 if viewer(request) is not None else 401
            await Response(status_code=status)(scope, receive, send)
            return
        token = runtime(request).secrets.api_token
        headers = [(k, v) for k, v in scope["headers"] if k != b"authorization"]
        headers.append((b"authorization", f"Bearer {token}".encode()))
        path = f"/files/{sha}"
        inner = {**scope, "path": path, "raw_path": path.encode(), "headers": headers}
        await scope["app"].router(inner, receive, send)


async def stylesheet(request: Request) -> Response:
    return Response(
        STYLESHEET.read_bytes(),
        media_type="text/css",
        headers={"Cache-Control": "public, max-age=3600"},
    )


ROUTES = [
    Route("/dashboard", overview, methods=["GET"], name="dashboard", include_in_schema=False),
    Route("/dashboard/login", login_form, methods=["GET"], include_in_schema=False),
    Route("/dashboard/login", login, methods=["POST"], include_in_schema=False),
    Route("/dashboard/logout", logout, methods=["POST"], include_in_schema=False),
    Route(
        "/dashboard/tasks/{task_id:path}",
        task_page,
        methods=["GET"],
        name="dashboard_task",
        include_in_schema=False,
    ),
    Route("/dashboard/stuck", stuck, methods=["GET"], include_in_schema=False),
    Route("/dashboard/quarantine", quarantine, methods=["GET"], include_in_schema=False),
    Route(
        "/dashboard/quarantine/{quarantine_id}/replay",
        replay,
        methods=["POST"],
        include_in_schema=False,
    ),
    Route("/dashboard/health", health, methods=["GET"], include_in_schema=False),
    Route(
        "/dashboard/files/{sha256}",
        ArchivedFile(),
        methods=["GET", "HEAD"],
        include_in_schema=False,
    ),
    Route("/dashboard/static/dashboard.css", stylesheet, methods=["GET"], include_in_schema=False),
]
