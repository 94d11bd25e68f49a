"""Hostile callback bodies, in-process: never a 5xx, always the error shape, the app keeps serving.

Each property also checks the bookkeeping: the quarantine grows exactly by the
deliveries answered 400 or 422, tasks appear only for 200s, and nothing else
(413, 401) leaves a trace.
"""

from __future__ import annotations

import json
import sqlite3
import string
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.providers import NAMES as PROVIDERS
from server.web.app import create_app

from .conftest import callback_path, serve_app
from .harness import API_TOKEN
from .payloads import BUILDERS, dumps

HYPOTHESIS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
KEPT_STATUSES = (400, 422)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)


def counts(db: Path) -> tuple[int, int, int]:
    """(tasks, deliveries, quarantined) as committed on disk."""
    conn = sqlite3.connect(db)
    try:
        return tuple(  # type: ignore[return-value]
            conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            for table in ("tasks", "deliveries", "quarantine")
        )
    finally:
        conn.close()


def assert_answer_shape(answer: httpx.Response) -> None:
    assert answer.status_code < 500, answer.text
    assert answer.headers["content-type"].startswith("application/json")
    body = answer.json()
    if answer.status_code == 200:
        assert body["ok"] is True and isinstance(body["task_id"], str)
    else:
        assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}


async def post_and_check(
    client: httpx.AsyncClient, db: Path, provider: str, content: Any, **kwargs: Any
) -> httpx.Response:
    """Post one body and check the answer and exactly what it left in the database."""
    before = counts(db)
    answer = await client.post(callback_path(provider), content=content, **kwargs)
    assert_answer_shape(answer)
    tasks, deliveries, quarantined = counts(db)
    kept = answer.status_code in KEPT_STATUSES
    assert quarantined == before[2] + int(kept)
    if answer.status_code != 200:
        assert (tasks, deliveries) == before[:2]
    assert (await client.get("/healthz")).status_code == 200
    return answer


def db_of(app) -> Path:
    return app.state.taskhook.settings.database_path


@HYPOTHESIS
@given(provider=st.sampled_from(PROVIDERS), body=st.binary(max_size=2048))
async def test_random_bytes(app, client, provider, body):
    answer = await post_and_check(client, db_of(app), provider, body)
    assert answer.status_code in (200, 400, 422)


@HYPOTHESIS
@given(provider=st.sampled_from(PROVIDERS), value=json_values)
async def test_random_json_document(app, client, provider, value):
    answer = await post_and_check(client, db_of(app), provider, json.dumps(value).encode())
    assert answer.status_code in (200, 400, 422)


def paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key path in a JSON document, containers included."""
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, child in value.items():
            found += paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += paths(child, (*prefix, index))
    return found


def with_value(document: Any, path: tuple, value: Any) -> Any:
    copy = json.loads(json.dumps(document))
    target = copy
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return copy


@HYPOTHESIS
@given(data=st.data(), provider=st.sampled_from(PROVIDERS), value=json_values)
async def test_any_value_in_any_field_of_a_real_payload(app, client, data, provider, value):
    document = BUILDERS[provider]()
    path = data.draw(st.sampled_from(paths(document)), label="field")
    hostile = with_value(document, path, value)
    answer = await post_and_check(client, db_of(app), provider, dumps(hostile))
    assert answer.status_code in (200, 422)


def nested(depth: int, inner: str = "1") -> str:
    return '{"a":' * depth + inner + "}" * depth


async def test_ten_thousand_levels_of_nesting(app, client):
    db = db_of(app)
    for body in (
        "[" * 10_000 + "]" * 10_000,
        nested(10_000),
        '{"success": true, "task_id": "deep-1", "data": ' + "[" * 10_000 + "]" * 10_000 + "}",
        '{"success": true, "task_id": "deep-2", "extra": ' + nested(10_000) + "}",
    ):
        answer = await post_and_check(client, db, "seedance", body.encode())
        assert answer.status_code in (200, 400, 422)
    # Nesting just under the parser's limit parses; the state it yields must still be storable.
    body = '{"success": true, "task_id": "deep-3", "extra": ' + nested(900) + "}"
    answer = await post_and_check(client, db, "seedance", body.encode())
    assert answer.status_code in (200, 400, 422)


async def test_non_utf8_bodies(app, client):
    db = db_of(app)
    for body in (
        b'{"success": true, "task_id": "\xff\xfe"}',
        '{"task_id": "caf\u00e9"}'.encode("latin-1"),
        '{"task_id": "x"}'.encode("utf-16"),
        b"\xc3\x28",
        b"\x00" * 64,
    ):
        answer = await post_and_check(client, db, "seedance", body)
        assert answer.status_code in (400, 422), body


async def test_content_type_does_not_matter(app, client):
    db = db_of(app)
    for content_type in (None, "text/plain", "application/xml", "multipart/form-data", "\x01"):
        headers = {"content-type": content_type} if content_type is not None else {}
        answer = await post_and_check(
            client, db, "seedance", dumps(BUILDERS["seedance"]()), headers=headers
        )
        assert answer.status_code == 200, content_type


def padded(size: int, provider: str = "seedance") -> bytes:
    """A valid callback of exactly ``size`` bytes (the padding is an unknown field)."""
    document = BUILDERS[provider]()
    document["padding"] = ""
    base = len(dumps(document))
    document["padding"] = "x" * (size - base)
    body = dumps(document)
    assert len(body) == size
    return body


@HYPOTHESIS
@given(
    excess=st.integers(min_value=-64, max_value=64),
    chunked=st.booleans(),
    chunk_size=st.integers(min_value=1, max_value=700),
)
async def test_sizes_around_the_body_limit(settings, excess, chunked, chunk_size):
    limit = 4096
    config = replace(settings, max_body_bytes=limit)
    body = padded(limit + excess)

    async def chunks():  # no content-length: the limit must hold while reading
        for start in range(0, len(body), chunk_size):
            yield body[start : start + chunk_size]

    async with serve_app(config, authorization=f"Bearer {API_TOKEN}") as client:
        answer = await post_and_check(
            client, config.database_path, "seedance", chunks() if chunked else body
        )
    assert answer.status_code == (200 if excess <= 0 else 413)


async def test_quarantine_is_capped_oldest_dropped_first(settings):
    application = create_app(replace(settings, quarantine_max_rows=5))
    async with (
        application.router.lifespan_context(application),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=application),
            base_url="http://taskhook.test",
            headers={"authorization": f"Bearer {API_TOKEN}"},
        ) as client,
    ):
        for number in range(8):
            answer = await client.post(callback_path("seedance"), content=f"junk {number}".encode())
            assert answer.status_code == 400
        items = (await client.get("/quarantine")).json()["items"]
        assert [item["body"] for item in items] == [f"junk {n}" for n in range(7, 2, -1)]
        assert await application.state.taskhook.store.counter("quarantine_dropped") == 3
        assert (await client.get("/healthz")).status_code == 200


async def test_request_without_a_body_at_all(app, client):
    answer = await post_and_check(client, db_of(app), "seedance", b"")
    assert answer.status_code == 400


async def test_printable_garbage_is_kept_verbatim(app, client):
    body = (string.printable * 20).encode()
    await post_and_check(client, db_of(app), "dreamina", body)
    items = (await client.get("/quarantine")).json()["items"]
    assert items[0]["body"] == body.decode()
