"""A fake of the upstream APIs taskhook talks to, for demos and end-to-end tests.

It plays AceData's tasks endpoints (``POST /{seedream,seedance,dreamina}/tasks``,
actions ``retrieve`` and ``retrieve_batch``) and Seedance 2.0's task query
(``GET /v1/video/generations/{task_id}``) with the payload shapes of the upstream
documents, serves the result files itself (``GET /files/{name}``), sends
callbacks, and injects faults on request. Tasks are created through the
control API under ``/_fake/`` or through the creation endpoints
(``POST /seedream/images``, ``/seedance/videos``, ``/dreamina/videos``,
``/v1/video/generations``; outcomes, settings and call log in
``fake_upstream_creations``), and finish after ``finish_after`` seconds or when
told to. Choices the documents leave open:

- an unfinished SeeDream task, or any unfinished task with ``acedata_pending="empty"``,
  answers ``{}`` like an unknown one; SeeDance answers ``data.status`` ``queued``
  then ``running``, Dreamina ``running``, without result URLs;
- a failed AceData task's response is
  ``{success: false, task_id, trace_id, error: {code: "generation_failed", message}}``;
- an unknown Seedance 2.0 task answers 404 ``{"code": "task_not_found", "message", "data": null}``,
  a wrong key 401 ``{"code": "invalid_api_key", ...}``, injected faults the same shape;
- Seedance 2.0 result URLs carry ``X-Tos-Date``/``X-Tos-Expires``/``X-Tos-Signature``;
  ``/files`` answers 403 once such a URL has expired or was altered.

Modules: ``fake_upstream_payloads`` (shapes), ``fake_upstream_state`` (config, tasks,
faults, counters), ``fake_upstream_callbacks`` (delivery), ``fake_upstream_creations``
(creation outcomes and log), ``fake_upstream_control`` (the ``/_fake/`` API),
``fake_upstream_http`` (answers, waits), ``serving`` (uvicorn on a free port), this
one (the upstream routes, the app, the CLI).
Run ``python scripts/fake_upstream.py --help``; from tests use ``create_app`` or ``running_fake``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

# Run as ``python scripts/fake_upstream.py``: make ``scripts.*`` importable the
# same way the tests and benchmarks import it, so each module exists once.
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from scripts.fake_upstream_callbacks import CallbackPolicy  # noqa: E402
from scripts.fake_upstream_control import ROUTES as CONTROL_ROUTES  # noqa: E402
from scripts.fake_upstream_creations import (  # noqa: E402
    CREATE_PATHS,
    ERROR_STATUSES,
    async_answer,
    error_body,
    is_async,
    missing_fields,
)
from scripts.fake_upstream_http import (  # noqa: E402
    ConnectionDropped,
    ace_error,
    answer_deadline,
    bearer_ok,
    drop_connection,
    fake_state,
    hold,
    injected_fault,
    json_answer,
    json_body,
    s2_error,
    unauthorized,
    until,
)
from scripts.fake_upstream_payloads import (  # noqa: E402
    SEEDANCE_SHAPES,
    FakeTask,
    acedata_response,
    acedata_wrapper,
    content_type,
    file_chunks,
    file_content,
    file_denied,
    seedance2_body,
)
from scripts.fake_upstream_state import (  # noqa: E402
    ACEDATA,
    FAULT_KINDS,
    MAX_HOLD_SECONDS,
    PROVIDERS,
    FakeConfig,
    FakeState,
)
from scripts.serving import listen, serving  # noqa: E402

__all__ = [
    "PROVIDERS",
    "CallbackPolicy",
    "ConnectionDropped",
    "FakeConfig",
    "FakeState",
    "create_app",
    "file_content",
    "main",
    "running_fake",
    "serving",
]

_FILE_NAME = re.compile(r"^[A-Za-z0-9._-]{1,200}$")


async def acedata_tasks(request: Request) -> Response:
    deadline = answer_deadline(fake_state(request))
    response = await _acedata_tasks(request)
    await until(deadline)
    return response


async def _acedata_tasks(request: Request) -> Response:
    service, state = request.path_params["service"], fake_state(request)
    if service not in ACEDATA:
        return ace_error(404, "not_found", f"no service {service!r}")
    body = await json_body(request)
    action = body.get("action", "retrieve") if isinstance(body, dict) else None
    kind = "retrieve_batch" if action == "retrieve_batch" else "retrieve"
    state.calls[service][kind] += 1
    if not bearer_ok(request, state.config.acedata_token):
        return unauthorized(state, service)
    if (fault := await injected_fault(request, service, kind)) is not None:
        return fault
    if not isinstance(body, dict) or action not in ("retrieve", "retrieve_batch"):
        return ace_error(400, "bad_request", "body must be a JSON object with a known action")
    now, pending = time.time(), state.config.acedata_pending
    shape = state.config.seedance_shape
    if kind == "retrieve":
        task_id = body.get("id")
        trace_id = body.get("trace_id") if service == "dreamina" else None
        if not task_id and not trace_id:
            return ace_error(400, "bad_request", "id or trace_id is required to retrieve a task")
        if task_id:
            task = state.find(service, str(task_id))
        else:
            task = state.find_by_trace(service, str(trace_id))
        response = acedata_response(task, now, pending, shape) if task else None
        return JSONResponse(acedata_wrapper(task, response) if task and response else {})
    if service in state.batch_not_implemented:
        message = "retrieve_batch is not implemented for this API"
        return ace_error(400, "api_not_implemented", message)
    ids = body.get("ids")
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        return ace_error(400, "bad_request", "ids must be a list of task ids")
    if 0 < state.config.max_batch_ids < len(ids):
        return ace_error(400, "bad_request", f"at most {state.config.max_batch_ids} ids per batch")
    state.batch_ids[service].append(len(ids))
    items = []
    for task_id in ids:
        task = state.find(service, task_id)
        response = acedata_response(task, now, pending, shape) if task else None
        if task and response:
            items.append(acedata_wrapper(task, response))
        elif state.config.unknown_as_empty:
            items.append({})
    return JSONResponse({"items": items, "count": len(items)})


async def seedance2_query(request: Request) -> Response:
    deadline = answer_deadline(fake_state(request))
    response = await _seedance2_query(request)
    await until(deadline)
    return response


async def _seedance2_query(request: Request) -> Response:
    state, task_id = fake_state(request), request.path_params["task_id"]
    state.calls["seedance2"]["seedance2_get"] += 1
    if not bearer_ok(request, state.config.seedance2_key):
        return unauthorized(state, "seedance2")
    if (fault := await injected_fault(request, "seedance2", "seedance2_get")) is not None:
        return fault
    task = state.find("seedance2", task_id)
    if task is None:
        return s2_error(404, "task_not_found", f"task {task_id} not found")
    return JSONResponse(seedance2_body(task, time.time(), state.config.result_url_ttl))


async def files(request: Request) -> Response:
    state, name = fake_state(request), request.path_params["name"]
    if not _FILE_NAME.match(name):
        return JSONResponse({"error": {"code": "not_found", "message": "no such file"}}, 404)
    if reason := file_denied(name, request.query_params):
        state.files["denied"] += 1
        return JSONResponse({"error": {"code": "forbidden", "message": reason}}, 403)
    size = state.config.file_bytes
    state.files["served"] += 1
    headers = {"Content-Length": str(size)}
    return StreamingResponse(
        file_chunks(name, size), media_type=content_type(name), headers=headers
    )


async def create_task(request: Request, provider: str) -> Response:
    """A creation call: log it, then answer as the next forced outcome says (default ``ok``)."""
    state = fake_state(request)
    desk, raw = state.creations, await request.body()
    acedata = provider != "seedance2"
    expected = state.config.acedata_token if acedata else state.config.seedance2_key
    authorized = bearer_ok(request, expected)
    entry = desk.record(provider, request.url.path, request.headers, authorized, raw)
    state.calls[provider]["create"] += 1
    settings = desk.settings_for(provider)
    await hold(request, state, settings.latency or 0.0)
    if not authorized:
        entry.update(outcome="unauthorized", status=401)
        return unauthorized(state, provider)
    forced, trace_id = desk.draw(provider), str(uuid.uuid4())
    if forced.outcome in ERROR_STATUSES:
        status, headers = int(forced.outcome), {}
        if status == 429 and forced.retry_after is not None:
            seconds = state.retry_after if forced.retry_after < 0 else forced.retry_after
            headers["Retry-After"] = f"{seconds:g}"
        entry.update(outcome=forced.outcome, status=status, trace_id=trace_id if acedata else None)
        body = error_body(provider, status, forced.code, forced.message, trace_id)
        return json_answer(body, status, headers)
    body = entry["body"]
    if reason := missing_fields(provider, body):
        entry.update(outcome="invalid", status=400, trace_id=trace_id if acedata else None)
        code = "bad_request" if acedata else "invalid_request"
        return json_answer(error_body(provider, 400, code, reason, trace_id), 400)
    task: FakeTask | None = None
    if forced.outcome != "close" or forced.create:
        spec = {
            "provider": provider,
            "callback_url": body.get("callback_url"),
            "finish_after": settings.finish_after,
            "outcome": settings.task_outcome,
        }
        task = state.create([spec], str(request.base_url))[0]
        entry.update(task_id=task.task_id, trace_id=task.trace_id if acedata else None)
    entry["outcome"] = forced.outcome
    if forced.outcome == "close" or task is None:
        return await drop_connection(request)
    if forced.outcome == "hang":
        entry["client_gone"] = not await hold(request, state, forced.seconds)
    if acedata and not is_async(body):
        # Without callback_url or async, AceData holds the call until the result exists.
        give_up = time.monotonic() + MAX_HOLD_SECONDS
        while not task.finished(time.time()) and time.monotonic() < give_up:
            if not await hold(request, state, state.config.tick):
                break
        if not task.finished(time.time()):
            entry["status"] = 504
            return ace_error(504, "timeout", "fake upstream: no result within the hold limit")
        entry["status"] = 200
        return json_answer(acedata_response(task, time.time()) or {})
    entry["status"] = 200
    shape = settings.answer_shape or "full"
    return json_answer(async_answer(task, shape, body.get("model"), time.time()))


def _creation_endpoint(provider: str) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        return await create_task(request, provider)

    endpoint.__name__ = f"create_{provider}"
    return endpoint


def create_app(config: FakeConfig | None = None) -> Starlette:
    state = FakeState(config or FakeConfig())

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await state.sender.start()
        ticker = asyncio.create_task(state.tick_forever(), name="fake-ticker")
        try:
            yield
        finally:
            state.stopping.set()
            await ticker
            await state.sender.stop()

    routes = [
        *CONTROL_ROUTES,
        *(Route(path, _creation_endpoint(p), methods=["POST"]) for p, path in CREATE_PATHS.items()),
        Route("/v1/video/generations/{task_id}", seedance2_query, methods=["GET"]),
        Route("/files/{name}", files, methods=["GET"]),
        Route("/{service}/tasks", acedata_tasks, methods=["POST"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.fake = state
    return app


@contextlib.asynccontextmanager
async def running_fake(config: FakeConfig | None = None) -> AsyncIterator[str]:
    """``async with running_fake(FakeConfig(...)) as base_url:`` a fake on 127.0.0.1."""
    async with serving(create_app(config)) as base_url:
        yield base_url


def _rate(text: str) -> tuple[str, float]:
    kind, _, rate = text.partition("=")
    if kind not in FAULT_KINDS:
        raise argparse.ArgumentTypeError(
            f"fault kind {kind!r} is not one of {', '.join(FAULT_KINDS)}"
        )
    return kind, float(rate)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Fake AceData and Seedance 2.0 upstream for taskhook.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=9100)
    p.add_argument("--acedata-token", default=FakeConfig.acedata_token)
    p.add_argument("--seedance2-key", default=FakeConfig.seedance2_key)
    p.add_argument("--finish-after", type=float, default=FakeConfig.finish_after)
    p.add_argument("--seed", type=int)
    p.add_argument("--public-url", default="")
    p.add_argument("--file-bytes", type=int, default=FakeConfig.file_bytes)
    p.add_argument("--result-url-ttl", type=int, default=FakeConfig.result_url_ttl)
    p.add_argument("--acedata-pending", choices=("status", "empty"), default="status")
    p.add_argument("--seedance-shape", choices=SEEDANCE_SHAPES, default="seed")
    p.add_argument("--unknown-as-empty", action="store_true")
    p.add_argument("--max-batch-ids", type=int, default=0)
    p.add_argument("--batch-not-implemented", action="append", default=[], choices=ACEDATA)
    p.add_argument("--fault", action="append", type=_rate, default=[], metavar="KIND=RATE")
    p.add_argument("--retry-after", type=float, default=FakeConfig.retry_after)
    p.add_argument("--timeout-hold", type=float, default=FakeConfig.timeout_hold)
    for name in ("drop", "duplicate", "reorder", "empty-first"):
        p.add_argument(f"--{name}", type=float, default=0.0)
    p.add_argument("--intermediate", action="store_true", help="Seedance 2.0 IN_PROGRESS callbacks")
    p.add_argument("--callback-wrapper", action="store_true", help="send whole task wrappers")
    p.add_argument("--latency", type=float, default=0.0, help="seconds every task call waits")
    p.add_argument("--create-latency", type=float, default=0.0, help="same, for creation calls")
    p.add_argument("--tick", type=float, default=FakeConfig.tick)
    p.add_argument("--log-level", default="info")
    args = p.parse_args(argv)
    policy = CallbackPolicy()
    policy.update(
        {
            "drop": args.drop,
            "duplicate": args.duplicate,
            "reorder": args.reorder,
            "empty_first": args.empty_first,
            "intermediate": args.intermediate,
            "wrapper": args.callback_wrapper,
        }
    )
    config = FakeConfig(
        acedata_token=args.acedata_token,
        seedance2_key=args.seedance2_key,
        finish_after=args.finish_after,
        seed=args.seed,
        public_url=args.public_url,
        file_bytes=args.file_bytes,
        result_url_ttl=args.result_url_ttl,
        acedata_pending=args.acedata_pending,
        seedance_shape=args.seedance_shape,
        unknown_as_empty=args.unknown_as_empty,
        max_batch_ids=args.max_batch_ids,
        batch_not_implemented=tuple(args.batch_not_implemented),
        faults=dict(args.fault),
        retry_after=args.retry_after,
        timeout_hold=min(args.timeout_hold, MAX_HOLD_SECONDS),
        callbacks=policy,
        latency=max(0.0, args.latency),
        create_latency=min(MAX_HOLD_SECONDS, max(0.0, args.create_latency)),
        tick=args.tick,
    )
    sock = listen(args.host, args.port)
    base = f"http://{args.host}:{sock.getsockname()[1]}"
    print(
        f"fake upstream on {base}\n  ACEDATA_BASE_URL={base}\n  SEEDANCE2_BASE_URL={base}",
        flush=True,
    )
    uvicorn.Server(uvicorn.Config(create_app(config), log_level=args.log_level)).run(sockets=[sock])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
