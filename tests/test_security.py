"""Callback tokens and the API bearer: one test per failure mode, nothing stored, nothing leaked."""

from __future__ import annotations

import re
import uuid
from dataclasses import replace
from http.cookies import SimpleCookie
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest

from server.core.tokens import callback_token
from server.providers import NAMES as PROVIDERS
from server.web import session, throttle
from server.web.app import create_app
from server.web.openapi import build_schema

from .conftest import callback_path, serve_app
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


DATABASE_PASSWORD = "db-password-never-logged"


@pytest.mark.e2e
def test_no_secret_in_any_log_line(tmp_path, database_url):
    """A session over every kind of route, through the real server; its whole log is searched.

    On PostgreSQL the URL carries a password (its own, or one the test server ignores,
    as it trusts loopback): it must not be logged either.
    """
    password = DATABASE_PASSWORD
    if database_url.startswith("postgresql://"):
        parts = urlsplit(database_url)
        if parts.password:
            password = parts.password
        else:
            netloc = f"{parts.username or 'postgres'}:{password}@{parts.netloc.rpartition('@')[2]}"
            database_url = urlunsplit(parts._replace(netloc=netloc))
    server = ServerProcess(tmp_path / "taskhook.db", database_url=database_url).start()
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
    for secret in (*SECRETS, password):
        assert secret not in logs


# -- the dashboard session (issue 10, items 10 and 14) ---------------------------------


def session_cookie(answer: httpx.Response) -> str:
    header = answer.headers["set-cookie"]
    assert header.startswith(f"{session.COOKIE_NAME}=")
    return header


async def test_session_cookie_is_secure_when_public_url_is_https(settings):
    https = replace(settings, public_url="https://hooks.example")
    async with serve_app(https) as browser:
        answer = await browser.post("/dashboard/login", data={"token": API_TOKEN})
        assert answer.status_code == 303
        assert "secure" in session_cookie(answer).lower().split("; ")


async def test_session_cookie_is_not_secure_over_plain_http(settings):
    async with serve_app(settings) as browser:
        answer = await browser.post("/dashboard/login", data={"token": API_TOKEN})
        assert "secure" not in session_cookie(answer).lower().split("; ")


@pytest.mark.e2e
@pytest.mark.parametrize("trusted", [True, False], ids=["trusted proxy", "untrusted proxy"])
def test_session_cookie_is_secure_behind_a_trusted_tls_proxy(tmp_path, trusted):
    """uvicorn reads X-Forwarded-Proto only from FORWARDED_ALLOW_IPS; the cookie follows."""
    env = {"FORWARDED_ALLOW_IPS": "127.0.0.1" if trusted else "10.9.8.7"}
    server = ServerProcess(tmp_path / "taskhook.db", env=env).start()
    try:
        answer = httpx.post(
            f"{server.url}/dashboard/login",
            data={"token": API_TOKEN},
            headers={"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9"},
        )
    finally:
        server.stop()
    assert answer.status_code == 303
    flags = session_cookie(answer).lower().split("; ")
    assert ("secure" in flags) is trusted


async def test_sign_in_is_throttled_per_address_with_a_growing_retry_after(app):
    def browser_from(address: str) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=app, client=(address, 40000))
        return httpx.AsyncClient(transport=transport, base_url="http://taskhook.test")

    clock = [1000.0]
    app.state.taskhook.throttle.clock = lambda: clock[0]
    async with browser_from("198.51.100.7") as attacker, browser_from("198.51.100.8") as other:
        for _ in range(throttle.FREE_TRIES):
            wrong = await attacker.post("/dashboard/login", data={"token": "guess"})
            assert wrong.status_code == 401
        waits = []
        for token in ("guess", "guess", API_TOKEN):  # while locked, even the right token waits
            locked = await attacker.post("/dashboard/login", data={"token": token})
            assert locked.status_code == 429 and "set-cookie" not in locked.headers
            waits.append(int(locked.headers["retry-after"]))
        assert waits[0] < waits[1] < waits[2] <= throttle.MAX_WAIT
        # Another address is not held back by this one.
        assert (await other.post("/dashboard/login", data={"token": API_TOKEN})).status_code == 303

        clock[0] += waits[-1]  # the lock has passed
        assert (
            await attacker.post("/dashboard/login", data={"token": API_TOKEN})
        ).status_code == 303
        # A right sign-in clears the count: wrong tries start from zero again.
        assert (await attacker.post("/dashboard/login", data={"token": "x"})).status_code == 401


def test_throttle_waits_are_capped_and_forget_quiet_addresses():
    clock = [0.0]
    t = throttle.SignInThrottle(clock=lambda: clock[0])
    for _ in range(throttle.FREE_TRIES):
        assert t.wait("a") == 0
        t.failed("a")
    waits = [t.wait("a") for _ in range(20)]
    assert waits == sorted(waits) and waits[-1] == throttle.MAX_WAIT
    clock[0] += throttle.FORGET_AFTER + throttle.MAX_WAIT + 1
    assert t.wait("a") == 0


async def test_sign_out_revokes_the_session_in_every_process(settings):
    """A copy of the cookie stops working at sign-out, also in another process on the database."""
    first, second = create_app(settings), create_app(settings)
    async with (
        first.router.lifespan_context(first),
        second.router.lifespan_context(second),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=first), base_url="http://taskhook.test"
        ) as browser,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=second), base_url="http://taskhook.test"
        ) as thief,
    ):
        signed = await browser.post("/dashboard/login", data={"token": API_TOKEN})
        cookie = SimpleCookie(signed.headers["set-cookie"])[session.COOKIE_NAME].value
        thief.cookies.set(session.COOKIE_NAME, cookie, domain="taskhook.test", path="/dashboard")
        assert (await thief.get("/dashboard")).status_code == 200  # a copied cookie works...
        page = await browser.get("/dashboard")
        csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text).group(1)
        out = await browser.post("/dashboard/logout", data={"csrf": csrf})
        assert out.status_code == 303
        # ...until sign-out, in this process and in the other one.
        assert (await thief.get("/dashboard")).status_code == 303
        browser.cookies.set(session.COOKIE_NAME, cookie, domain="taskhook.test", path="/dashboard")
        assert (await browser.get("/dashboard")).status_code == 303
        # A new sign-in gets a new session, which works.
        again = await browser.post("/dashboard/login", data={"token": API_TOKEN})
        assert SimpleCookie(again.headers["set-cookie"])[session.COOKIE_NAME].value != cookie
        assert (await browser.get("/dashboard")).status_code == 200


# -- no secret in any answer or log line (items 11, 12) --------------------------------

NEAR_MISS_PATHS = [
    f"/callbacks//seedance/{RIGHT_TOKEN}",
    f"/CALLBACKS/seedance/{RIGHT_TOKEN}",
    f"/callbacks/SEEDANCE/{RIGHT_TOKEN}",
    f"/callbacks/seedance/x/{RIGHT_TOKEN}",
    f"/callbacks/seed%2Fance/{RIGHT_TOKEN}",
    f"/callbacks/seedance/{RIGHT_TOKEN}/",
    f"/callbacks/seedance/{RIGHT_TOKEN.upper()}",
    f"/callbacks/seedance?token={RIGHT_TOKEN}",
    f"/hooks/callbacks/seedance/{RIGHT_TOKEN}",
    f"/{RIGHT_TOKEN}",
    f"/tasks?cursor={RIGHT_TOKEN}",
]


@pytest.mark.parametrize("path", NEAR_MISS_PATHS)
async def test_answers_to_near_miss_paths_hold_no_secret(client, path):
    for method in ("GET", "POST", "PUT", "DELETE"):
        answer = await client.request(method, path, content=b"{}")
        assert answer.status_code < 500
        assert RIGHT_TOKEN not in answer.text and RIGHT_TOKEN.upper() not in answer.text
        assert_no_secret(answer.text)


@pytest.mark.e2e
def test_near_miss_callback_paths_are_redacted_in_access_logs(tmp_path):
    server = ServerProcess(tmp_path / "taskhook.db", env={"LOG_FORMAT": "json"}).start()
    try:
        with httpx.Client(base_url=server.url, timeout=10) as c:
            for path in NEAR_MISS_PATHS:
                c.post(path, content=b"{}")
                c.get(path)
    finally:
        server.stop()
    logs = server.logs()
    assert "/callbacks//seedance/[redacted]" in logs  # the access lines were written
    for secret in (*SECRETS, RIGHT_TOKEN.upper(), RIGHT_TOKEN.lower()):
        assert secret not in logs
