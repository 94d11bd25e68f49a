"""Callback tokens and the API bearer: one test per failure mode, nothing stored, nothing leaked."""

from __future__ import annotations

import re
import uuid

import httpx
import pytest

from server.core.tokens import callback_token
from server.providers import NAMES as PROVIDERS
from server.web.openapi import build_schema

from .conftest import callback_path
from .harness import API_TOKEN, CALLBACK_SECRET, ServerProcess
from .payloads import BUILDERS, dumps, seedance

RIGHT_TOKEN = callback_token(CALLBACK_SECRET, "seedance")
SECRETS = (API_TOKEN, CALLBACK_SECRET, *(callback_token(CALLBACK_SECRET, p) for p in PROVIDERS))

BAD_CALLBACK_PATHS = {
    "wrong token": "/callbacks/seedance/not-the-token",
    "token upper-cased": f"/callbacks/seedance/{RIGHT_TOKEN.upper()}",
    "token lower-cased": f"/callbacks/seedance/{RIGHT_TOKEN.lower()}",
    "token with a character more": f"/callbacks/seedance/{RIGHT_TOKEN}x",
    "token cut short": f"/callbacks/seedance/{RIGHT_TOKEN[:-1]}",
    "another provider's token": "/callbacks/seedance/"
    + callback_token(CALLBACK_SECRET, "seedream"),
    "token from another secret": f"/callbacks/seedance/{callback_token('other', 'seedance')}",
    "the secret itself as token": f"/callbacks/seedance/{CALLBACK_SECRET}",
    "the API token as token": f"/callbacks/seedance/{API_TOKEN}",
    "non-ASCII token": "/callbacks/seedance/%C3%A9t%C3%A9",
}


async def assert_nothing_stored(client: httpx.AsyncClient) -> None:
    assert (await client.get("/tasks")).json()["tasks"] == []
    assert (await client.get("/quarantine")).json()["items"] == []


def assert_no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text


@pytest.mark.parametrize("case", sorted(BAD_CALLBACK_PATHS))
async def test_bad_callback_token_is_401_and_stores_nothing(client, case):
    answer = await client.post(BAD_CALLBACK_PATHS[case], content=dumps(seedance()))
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "unauthorized"
    assert_no_secret(answer.text)
    await assert_nothing_stored(client)


async def test_bad_token_with_unparseable_body_is_401_not_quarantined(client):
    answer = await client.post("/callbacks/seedance/nope", content=b"\xff not json")
    assert answer.status_code == 401
    await assert_nothing_stored(client)


async def test_missing_callback_token_stores_nothing(client):
    for path in ("/callbacks/seedance", "/callbacks/seedance/"):
        answer = await client.post(path, content=dumps(seedance()))
        assert answer.status_code == 404, path
        assert answer.json()["error"]["code"] == "not_found"
    await assert_nothing_stored(client)


async def test_each_provider_token_opens_only_its_own_path(client):
    for provider in PROVIDERS:
        for other in PROVIDERS:
            path = f"/callbacks/{provider}/{callback_token(CALLBACK_SECRET, other)}"
            answer = await client.post(path, content=dumps(BUILDERS[provider]()))
            assert answer.status_code == (200 if other == provider else 401), (provider, other)
    assert len((await client.get("/tasks")).json()["tasks"]) == len(PROVIDERS)


def bearer_operations(app) -> list[tuple[str, str]]:
    """Every (method, concrete path) the OpenAPI schema marks as needing the bearer."""
    operations = []
    for path, methods in build_schema(app.routes)["paths"].items():
        concrete = re.sub(r"\{[^}]+\}", lambda m: f"unknown-{uuid.uuid4().hex[:8]}", path)
        for method, operation in methods.items():
            if operation.get("security"):
                operations.append((method.upper(), concrete))
    return operations


BAD_AUTHORIZATIONS = {
    "missing": None,
    "empty": "",
    "scheme only": "Bearer",
    "scheme and blank": "Bearer   ",
    "wrong token": "Bearer wrong-token",
    "token upper-cased": f"Bearer {API_TOKEN.upper()}",
    "token with a suffix": f"Bearer {API_TOKEN}x",
    "token without scheme": API_TOKEN,
    "basic scheme": f"Basic {API_TOKEN}",
    "callback secret": f"Bearer {CALLBACK_SECRET}",
    "non-ASCII": "Bearer \u00e9t\u00e9".encode(),
}


async def test_schema_lists_the_bearer_routes(app):
    listed = {path.split("/unknown-")[0] for _, path in bearer_operations(app)}
    assert {"/tasks", "/quarantine"} <= listed


@pytest.mark.parametrize("case", sorted(BAD_AUTHORIZATIONS))
async def test_bad_bearer_is_401_on_every_route_before_any_lookup(app, client, case):
    value = BAD_AUTHORIZATIONS[case]
    for method, path in bearer_operations(app):
        headers = {"authorization": value} if value is not None else {}
        request = client.build_request(
            method, path, content=b'{"provider": "seedance"}', headers=headers
        )
        if value is None:
            del request.headers["authorization"]
        answer = await client.send(request)
        # 401 even for ids that do not exist: the bearer is checked before the lookup.
        assert answer.status_code == 401, (method, path, answer.text)
        assert answer.json()["error"]["code"] == "unauthorized"
        assert answer.headers["www-authenticate"] == "Bearer"
        assert_no_secret(answer.text)
    await assert_nothing_stored(client)


async def test_bad_bearer_cannot_register(client):
    answer = await client.post(
        "/tasks",
        json={"provider": "seedance", "task_id": "t-1"},
        headers={"authorization": "Bearer wrong"},
    )
    assert answer.status_code == 401
    assert (await client.get("/tasks/t-1")).status_code == 404


@pytest.mark.e2e
def test_no_secret_in_any_log_line(tmp_path):
    """A session over every kind of route, through the real server; its whole log is searched."""
    server = ServerProcess(tmp_path / "taskhook.db").start()
    try:
        good = {"authorization": f"Bearer {API_TOKEN}"}
        with httpx.Client(base_url=server.url, timeout=10) as c:
            for provider in PROVIDERS:
                body = dumps(BUILDERS[provider]())
                assert c.post(callback_path(provider), content=body).status_code == 200
                assert c.post(callback_path(provider), content=body).status_code == 200
            c.post(callback_path("seedance"), content=b"not json")
            c.post(callback_path("seedream"), content=b"{}")
            c.post("/callbacks/seedance/wrong", content=b"{}")
            c.post(callback_path("seedance"), content=b"x" * 2_000_000)
            c.post("/tasks", json={"provider": "seedance", "task_id": "log-1"}, headers=good)
            c.get("/tasks", headers=good)
            c.get("/tasks/log-1", headers=good)
            c.get("/tasks/log-1/deliveries", headers=good)
            c.get("/tasks/log-1", headers={"authorization": "Bearer wrong"})
            c.get("/quarantine", headers=good)
            c.post("/quarantine/1/replay", headers=good)
            c.get("/readyz")
            c.get("/metrics")
            c.delete(callback_path("seedance"))
    finally:
        server.stop()
    logs = server.logs()
    assert "/callbacks/seedance/" in logs  # the access log ran, so the search means something
    for secret in SECRETS:
        assert secret not in logs
