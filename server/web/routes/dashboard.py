"""``/dashboard``: server-rendered pages for operators, signed in with ``API_TOKEN``.

Tasks, a task's timeline, stuck tasks, provider health. Sign-in and the page
helpers live in ``dashboard_auth``; the quarantine pages in ``dashboard_quarantine``,
the webhook endpoints in ``dashboard_endpoints``.
"""

from __future__ import annotations

import logging
import time
import weakref
from dataclasses import asdict
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from server.core.ids import task_key
from server.core.render import task_json
from server.core.types import Status, TaskRecord
from server.errors import BadRequest
from server.observe.metrics import task_snapshot
from server.providers import PROVIDERS
from server.store import CONCERNS, Store
from server.web import params
from server.web.id_route import IdRoute
from server.web.routes.dashboard_auth import (
    PAGE_SIZE,
    STYLESHEET,
    Viewer,
    login,
    login_form,
    logout,
    message_page,
    page,
    page_route,
    pretty_body,
    signed_in,
    viewer,
)
from server.web.routes.dashboard_views import is_sha256, result_view, timeline
from server.web.routes.dashboard_views import rows as status_rows
from server.web.routes.health import service_statuses
from server.web.runtime import Runtime, runtime

log = logging.getLogger("taskhook.dashboard")


# -- pages -------------------------------------------------------------------------

STATUSES = tuple(s.value for s in Status)
#: Search by prefix needs this many characters of an id (ids match without case or dashes).
MIN_PREFIX = 8
MAX_SEARCH = 256
#: The overview's concern counts scan the tasks table; a burst of page loads shares one scan.
CONCERN_COUNTS_MAX_AGE = 15.0
_concern_counts: weakref.WeakKeyDictionary[Store, tuple[float, dict[str, int]]] = (
    weakref.WeakKeyDictionary()
)


async def concern_counts(store: Store) -> dict[str, int]:
    cached = _concern_counts.get(store)
    if cached is not None and time.monotonic() - cached[0] < CONCERN_COUNTS_MAX_AGE:
        return cached[1]
    counts = await store.count_concerns()
    _concern_counts[store] = (time.monotonic(), counts)
    return counts


async def search_tasks(store: Store, text: str) -> tuple[list[TaskRecord], str | None]:
    """The task with this id, else the tasks whose id starts with it (8 characters at least)."""
    if len(text) > MAX_SEARCH:
        raise BadRequest(f"search for at most {MAX_SEARCH} characters of a task id")
    found = await store.get_task(text)
    if found is not None:
        return [found], None
    if len(task_key(text)) < MIN_PREFIX:
        return [], (
            f"No task has this id. To search by the start of an id, type at least "
            f"{MIN_PREFIX} of its characters (dashes and case do not count)."
        )
    tasks = await store.find_tasks(text, limit=PAGE_SIZE + 1)
    if len(tasks) > PAGE_SIZE:
        return tasks[:PAGE_SIZE], f"The first {PAGE_SIZE} tasks whose id starts with this."
    return tasks, None


@signed_in
async def overview(request: Request, who: Viewer) -> Response:
    store = runtime(request).store
    q = request.query_params
    status = params.one_of(q.get("status"), "status", STATUSES)
    provider = params.one_of(q.get("provider"), "provider", PROVIDERS)
    concern = params.one_of(q.get("concern"), "concern", CONCERNS)
    cursor = q.get("cursor") or None  # the store refuses one it did not hand out (400)
    search = (q.get("q") or "").strip()
    if concern and (status or provider):
        raise BadRequest("show one concern, or filter by status and provider, not both at once")
    next_cursor, note = None, None
    if search:
        tasks, note = await search_tasks(store, search)
    elif concern:
        tasks, next_cursor = await store.list_concern(concern, limit=PAGE_SIZE, cursor=cursor)
    else:
        tasks, next_cursor = await store.list_tasks(
            status=status, provider=provider, limit=PAGE_SIZE, cursor=cursor
        )
    filters = {
        k: v for k, v in (("status", status), ("provider", provider), ("concern", concern)) if v
    }
    older = f"?{urlencode({**filters, 'cursor': next_cursor})}" if next_cursor else None
    return page(
        request,
        "overview.html",
        {
            "viewer": who,
            "snapshot": await task_snapshot(store),
            "concerns": await concern_counts(store),
            "concern_names": CONCERN_NAMES,
            "tasks": tasks,
            "status": status,
            "provider": provider,
            "concern": concern,
            "search": search,
            "note": note,
            "paged": cursor is not None,
            "newest": f"?{urlencode(filters)}",
            "older": older,
        },
    )


#: How the overview names each concern.
CONCERN_NAMES = {
    "conflicts": "with a conflicting final report",
    "archive_failed": "with a failing archive copy",
    "gap_filled": "finished by the reconciler (callback missed)",
}


@signed_in
async def task_page(request: Request, who: Viewer) -> Response:
    store = runtime(request).store
    task_id = request.path_params["task_id"]
    record = await store.get_task(task_id)
    if record is None:
        message = f"No task {task_id!r} is known (ids match without case or dashes)."
        return message_page(request, who, "No such task", message, 404)
    deliveries = [
        {**asdict(d), "pretty": pretty_body(d.body), "bytes": len(d.body)}
        for d in await store.deliveries(record.state.task_id)
    ]
    view = task_json(record)
    return page(
        request,
        "task.html",
        {
            "viewer": who,
            "task": record,
            "view": view,
            "results": [result_view(r) for r in view["results"]],
            "conflicts": [
                {**c, "results": [result_view(r) for r in c["results"]]}
                for c in view.get("conflicts", [])
            ],
            "deliveries": timeline(deliveries, record.state),
            # A task nothing was received for has no source yet (checks alone are not one).
            "last_source": record.last_source if record.deliveries else None,
        },
    )


#: The longest look-back the stuck page takes (ten years, in hours).
MAX_HOURS = 24 * 365 * 10


@signed_in
async def stuck(request: Request, who: Viewer) -> Response:
    hours = params.hours(request.query_params.get("hours"), default=1.0, high=MAX_HOURS)
    now = time.time()
    tasks = await runtime(request).store.stuck_tasks(now - hours * 3600, limit=200)
    return page(request, "stuck.html", {"viewer": who, "tasks": tasks, "hours": hours})


@signed_in
async def health(request: Request, who: Viewer) -> Response:
    rt = runtime(request)
    now = time.time()
    services = await service_statuses(rt)
    return page(
        request,
        "health.html",
        {
            "viewer": who,
            "services": {name: status_rows(status, now) for name, status in services.items()},
            "reconciler": services.get("reconciler"),
            "provider_rows": provider_rows(rt, services.get("reconciler"), now),
        },
    )


def provider_rows(
    rt: Runtime, status: dict[str, Any] | None, now: float | None = None
) -> list[dict[str, Any]]:
    """One row per provider: is it configured, and what the reconciler says about it."""
    now = time.time() if now is None else now
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
                "detail": status_rows(detail, now) if isinstance(detail, dict) else None,
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
        who = await viewer(request)
        if who is None or not is_sha256(sha):
            status = 404 if who is not None else 401
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
    page_route("/dashboard", overview, name="dashboard"),
    page_route("/dashboard/login", login_form),
    page_route("/dashboard/login", login, "POST"),
    page_route("/dashboard/logout", logout, "POST"),
    IdRoute(
        "/dashboard/tasks",
        task_page,
        param="task_id",
        name="dashboard_task",
        include_in_schema=False,
    ),
    page_route("/dashboard/stuck", stuck),
    page_route("/dashboard/health", health),
    Route(
        "/dashboard/files/{sha256}",
        ArchivedFile(),
        methods=["GET", "HEAD"],
        include_in_schema=False,
    ),
    page_route("/dashboard/static/dashboard.css", stylesheet),
]
