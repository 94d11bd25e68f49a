"""The fake upstream's control API under ``/_fake/``: what tests and demos drive it with.

Create tasks, finish them, set faults, the callback policy and forced creation
outcomes, read the creation call log and the counters. ``ROUTES`` is its table.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from scripts.fake_upstream_http import bad_request, fake_state, json_answer, json_body
from scripts.fake_upstream_payloads import FakeTask, task_key
from scripts.fake_upstream_state import PROVIDERS, FakeState


def _task_json(t: FakeTask) -> dict[str, Any]:
    keys = ("provider", "task_id", "trace_id", "outcome", "finish_at", "callback_url")
    return {key: getattr(t, key) for key in keys}


async def control_create(request: Request) -> Response:
    state, body = fake_state(request), await json_body(request)
    if not isinstance(body, dict):
        return bad_request("body must be a JSON object")
    bulk = isinstance(body.get("tasks"), list)
    specs = [s if isinstance(s, dict) else {} for s in body["tasks"]] if bulk else [body]
    try:
        created = state.create(specs, str(request.base_url))
    except KeyError as exc:
        return bad_request(str(exc.args[0]), 409)
    except ValueError as exc:
        return bad_request(str(exc))
    if bulk:
        return JSONResponse({"tasks": [_task_json(t) for t in created]}, 201)
    return JSONResponse(_task_json(created[0]), 201)


async def control_finish(request: Request) -> Response:
    state, task_id = fake_state(request), request.path_params["task_id"]
    if not any(key == task_key(task_id) for _, key in state.tasks):
        return bad_request(f"no task {task_id}", 404)
    return JSONResponse({"finished": state.finish([task_id])})


async def control_finish_all(request: Request) -> Response:
    return JSONResponse({"finished": fake_state(request).finish()})


def _configure(
    apply: Callable[[FakeState, dict[str, Any]], object], show: Callable[[FakeState], Any]
) -> Callable[[Request], Awaitable[Response]]:
    """An endpoint that applies a JSON object of settings, then answers the settings now."""

    async def endpoint(request: Request) -> Response:
        state, body = fake_state(request), await json_body(request)
        try:
            apply(state, body if isinstance(body, dict) else {})
        except (ValueError, TypeError) as exc:
            return bad_request(str(exc))
        return JSONResponse(show(state))

    return endpoint


control_faults = _configure(FakeState.set_faults, FakeState.faults_json)
control_callbacks = _configure(
    lambda state, body: state.sender.policy.update(body),
    lambda state: asdict(state.sender.policy),
)
control_creations = _configure(
    lambda state, body: state.creations.configure(body),
    lambda state: state.creations.settings_json(),
)


async def control_creation_log(request: Request) -> Response:
    provider = request.query_params.get("provider")
    if provider is not None and provider not in PROVIDERS:
        return bad_request(f"provider {provider!r} is not one of {', '.join(PROVIDERS)}")
    calls = fake_state(request).creations.calls_json(provider)
    return json_answer({"calls": calls, "count": len(calls)})


async def control_stats(request: Request) -> Response:
    return JSONResponse(fake_state(request).stats_json())


ROUTES = [
    Route("/_fake/tasks", control_create, methods=["POST"]),
    Route("/_fake/tasks/{task_id}/finish", control_finish, methods=["POST"]),
    Route("/_fake/finish_all", control_finish_all, methods=["POST"]),
    Route("/_fake/faults", control_faults, methods=["POST"]),
    Route("/_fake/callbacks", control_callbacks, methods=["POST"]),
    Route("/_fake/stats", control_stats, methods=["GET"]),
    Route("/_fake/creations", control_creations, methods=["POST"]),
    Route("/_fake/creations", control_creation_log, methods=["GET"]),
]
