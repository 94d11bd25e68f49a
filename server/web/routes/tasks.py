"""``/tasks``: register tasks to expect and read their merged state."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.routing import Route

from server.core.ids import task_key
from server.core.render import task_json
from server.core.types import Status, TaskRecord, iso_time
from server.errors import NotFound, NotJSON, Unprocessable
from server.providers import PROVIDERS
from server.providers.parse import decode
from server.store import Registration
from server.web import params
from server.web.auth import require_api_token
from server.web.id_route import IdRoute
from server.web.openapi import doc
from server.web.responses import JSONResponse
from server.web.routes.body import json_problem, read_json
from server.web.runtime import runtime

MAX_REGISTRATIONS = 1000
REGISTER_BODY_LIMIT = 16 * 1024 * 1024
MAX_LIMIT = 500
#: Deeper kept bodies are shown as text: rendering them as JSON would recurse too far.
VIEW_DEPTH = 200


def _registration(item: Any, where: str) -> Registration:
    if not isinstance(item, dict):
        raise Unprocessable(
            f"{where} must be an object with 'provider' and 'task_id'", code="invalid_task"
        )
    provider, task_id = item.get("provider"), item.get("task_id")
    if not isinstance(provider, str) or provider not in PROVIDERS:
        raise Unprocessable(
            f"{where}.provider is {provider!r}; expected one of {', '.join(PROVIDERS)}",
            code="invalid_task",
        )
    if not isinstance(task_id, str) or not task_key(task_id) or len(task_id) > 200:
        raise Unprocessable(
            f"{where}.task_id must be a string of at most 200 characters with something "
            "besides dashes and spaces (ids match without case or dashes)",
            code="invalid_task",
        )
    trace_id, metadata = item.get("trace_id"), item.get("metadata")
    if trace_id is not None and not isinstance(trace_id, str):
        raise Unprocessable(f"{where}.trace_id must be a string", code="invalid_task")
    if metadata is not None and not isinstance(metadata, dict):
        raise Unprocessable(f"{where}.metadata must be an object", code="invalid_task")
    return Registration(provider, task_id.strip(), trace_id, metadata)


@doc(
    "Register tasks to expect",
    body='{"provider", "task_id", "trace_id"?, "metadata"?} or {"tasks": [...]} (up to 1,000)',
    responses={
        201: "the task(s)",
        400: "not JSON",
        413: "body too large",
        422: "invalid task",
    },
    auth=True,
)
async def register_tasks(request: Request) -> JSONResponse:
    require_api_token(request)
    payload = await read_json(request, REGISTER_BODY_LIMIT)
    bulk = isinstance(payload, dict) and "tasks" in payload
    if bulk:
        items = payload["tasks"]
        if not isinstance(items, list) or not items:
            raise Unprocessable("'tasks' must be a non-empty list", code="invalid_task")
        if len(items) > MAX_REGISTRATIONS:
            raise Unprocessable(
                f"'tasks' holds {len(items)} tasks; register at most {MAX_REGISTRATIONS} at once",
                code="too_many_tasks",
            )
        regs = [_registration(item, f"tasks[{i}]") for i, item in enumerate(items)]
    else:
        regs = [_registration(payload, "body")]
    records = await runtime(request).store.register(regs)
    tasks = [task_json(record) for record in records]
    return JSONResponse({"tasks": tasks} if bulk else tasks[0], status_code=201)


@doc(
    "A task's merged state",
    responses={200: "the task", 404: "unknown task"},
    auth=True,
)
async def get_task(request: Request) -> JSONResponse:
    require_api_token(request)
    return JSONResponse(task_json(await _known_task(request)))


@doc(
    "List tasks, newest first",
    query=("status", "provider", "limit", "cursor"),
    responses={
        200: "a page of tasks and next_cursor",
        400: "bad filter",
    },
    auth=True,
)
async def list_tasks(request: Request) -> JSONResponse:
    require_api_token(request)
    q = request.query_params
    status = params.one_of(q.get("status"), "status", [s.value for s in Status])
    provider = params.one_of(q.get("provider"), "provider", PROVIDERS)
    limit = params.whole_number(q.get("limit"), "limit", default=50, low=1, high=MAX_LIMIT)
    records, next_cursor = await runtime(request).store.list_tasks(
        status=status, provider=provider, limit=limit, cursor=q.get("cursor") or None
    )
    return JSONResponse({"tasks": [task_json(r) for r in records], "next_cursor": next_cursor})


async def _known_task(request: Request) -> TaskRecord:
    """The task the path names, or 404."""
    task_id = request.path_params["task_id"]
    record = await runtime(request).store.get_task(task_id)
    if record is None:
        raise NotFound(f"no task {task_id!r} is known (ids match without case or dashes)")
    return record


def body_view(body: bytes) -> Any:
    """A kept body as JSON when it reads as JSON we can answer with, else as text.

    Lone surrogate escapes stay (the answer writes them back as escapes); a body
    kept before the door refused NaN or overflowing numbers is shown as text.
    """
    try:
        value = decode(body)
    except NotJSON:
        return body.decode("utf-8", "replace")
    if json_problem(value, max_depth=VIEW_DEPTH, surrogates=False):
        return body.decode("utf-8", "replace")
    return value


@doc(
    "Every raw delivery kept for a task, oldest first",
    responses={200: "the deliveries", 404: "unknown task"},
    auth=True,
)
async def task_deliveries(request: Request) -> JSONResponse:
    require_api_token(request)
    record = await _known_task(request)
    items = [
        {
            "id": d.id,
            "source": d.source,
            "received_at": iso_time(d.received_at),
            "sha256": d.sha256,
            "status": d.status,
            "changed": d.changed,
            # An empty body was dropped by retention (RETENTION_DAYS); its sha256 stays.
            "body": body_view(d.body) if d.body else None,
            **({"body_dropped": True} if not d.body else {}),
        }
        for d in await runtime(request).store.deliveries(request.path_params["task_id"])
    ]
    return JSONResponse({"task_id": record.state.task_id, "deliveries": items})


ROUTES = [
    Route("/tasks", register_tasks, methods=["POST"], name="register_tasks"),
    Route("/tasks", list_tasks, methods=["GET"], name="list_tasks"),
    # The task id may hold any character, "/" included (see server.web.id_route).
    IdRoute("/tasks", get_task, param="task_id", siblings=("deliveries",), name="get_task"),
    IdRoute(
        "/tasks", task_deliveries, param="task_id", suffix="deliveries", name="task_deliveries"
    ),
]
