"""Every error path answers ``{"error": {"code", "message"}}`` as application/json."""

from __future__ import annotations

from dataclasses import replace

import httpx
import pytest

from .conftest import callback_path, serve_app
from .harness import API_TOKEN
from .payloads import dumps, seedance

NO_BEARER = {"authorization": ""}

#: (name, method, path, request kwargs, status, code) - one row per error path.
ERROR_PATHS = [
    ("not json", "POST", callback_path("seedance"), {"content": b"{nope"}, 400, "not_json"),
    ("bad limit", "GET", "/tasks?limit=zero", {}, 400, "invalid_filter"),
    ("bad status filter", "GET", "/tasks?status=done", {}, 400, "invalid_filter"),
    ("bad cursor", "GET", "/tasks?cursor=%%%", {}, 400, "invalid_cursor"),
    ("bad quarantine cursor", "GET", "/quarantine?cursor=x", {}, 400, "invalid_cursor"),
    ("register not json", "POST", "/tasks", {"content": b"["}, 400, "not_json"),
    ("wrong callback token", "POST", "/callbacks/seedance/x", {"content": b"{}"}, 401, None),
    ("no bearer", "GET", "/tasks", {"headers": NO_BEARER}, 401, "unauthorized"),
    ("unknown path", "GET", "/no/such/path", {}, 404, "not_found"),
    ("unknown provider", "POST", "/callbacks/nope/x", {"content": b"{}"}, 404, "not_found"),
    ("unknown task", "GET", "/tasks/nope", {}, 404, "not_found"),
    ("unknown task deliveries", "GET", "/tasks/nope/deliveries", {}, 404, "not_found"),
    ("unknown quarantine id", "POST", "/quarantine/999/replay", {}, 404, "not_found"),
    ("GET on callbacks", "GET", callback_path("seedance"), {}, 405, "method_not_allowed"),
    ("DELETE on tasks", "DELETE", "/tasks", {}, 405, "method_not_allowed"),
    ("PUT on healthz", "PUT", "/healthz", {}, 405, "method_not_allowed"),
    ("no task id", "POST", callback_path("seedream"), {"content": b"{}"}, 422, "no_task_id"),
    ("invalid registration", "POST", "/tasks", {"json": {"provider": "x"}}, 422, "invalid_task"),
    ("empty bulk", "POST", "/tasks", {"json": {"tasks": []}}, 422, "invalid_task"),
    ("endpoint not json", "POST", "/endpoints", {"content": b"{"}, 400, "not_json"),
    (
        "endpoint bad url",
        "POST",
        "/endpoints",
        {"json": {"url": "ftp://x"}},
        400,
        "invalid_endpoint",
    ),
    ("unknown endpoint", "GET", "/endpoints/ep_nope", {}, 404, "unknown_endpoint"),
    ("delete unknown endpoint", "DELETE", "/endpoints/ep_nope", {}, 404, "unknown_endpoint"),
    ("attempts bad outcome", "GET", "/endpoints/x/attempts?outcome=ok", {}, 400, "invalid_filter"),
    ("redeliver unknown event", "POST", "/events/evt_nope/redeliver", {}, 404, "not_found"),
    ("recover without since", "POST", "/endpoints/x/recover", {}, 400, "invalid_filter"),
]


def assert_error_shape(answer: httpx.Response, status: int, code: str | None = None) -> None:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith("application/json")
    body = answer.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message"}
    assert isinstance(body["error"]["code"], str) and body["error"]["code"]
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    if code is not None:
        assert body["error"]["code"] == code


@pytest.mark.parametrize(
    "method, path, kwargs, status, code",
    [row[1:] for row in ERROR_PATHS],
    ids=[row[0] for row in ERROR_PATHS],
)
async def test_error_path_has_the_error_shape(client, method, path, kwargs, status, code):
    answer = await client.request(method, path, **kwargs)
    assert_error_shape(answer, status, code)


async def test_body_over_the_limit_is_413_with_the_error_shape(settings):
    async with serve_app(replace(settings, max_body_bytes=100)) as c:
        answer = await c.post(callback_path("seedance"), content=dumps(seedance()))
        assert_error_shape(answer, 413, "body_too_large")


async def test_unexpected_failure_is_500_with_the_error_shape(app, monkeypatch):
    async def broken(task_id: str):
        raise RuntimeError("the disk caught fire")

    # ServerErrorMiddleware answers, then re-raises for the server to log; keep the answer.
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(
        transport=transport,
        base_url="http://taskhook.test",
        headers={"authorization": f"Bearer {API_TOKEN}"},
    ) as c:
        monkeypatch.setattr(app.state.taskhook.store, "get_task", broken)
        answer = await c.get("/tasks/any")
        assert_error_shape(answer, 500, "internal_error")
        assert "fire" not in answer.text  # internals stay in the log
        assert (await c.get("/healthz")).status_code == 200
