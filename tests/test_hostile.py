"""Hostile callback bodies, in-process: never a 5xx, always the error shape, the app keeps serving.

Each property also checks the bookkeeping: the quarantine grows exactly by the
deliveries answered 400 or 422, tasks appear only for 200s, and nothing else
(413, 401) leaves a trace.
"""

from __future__ import annotations

import json
import string
from dataclasses import replace
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.providers import NAMES as PROVIDERS
from server.web.app import create_app

from .conftest import callback_path, serve_app
from .harness import API_TOKEN, run_sql
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


def counts(db: str) -> tuple[int, int, int]:
    """(tasks, deliveries, quarantined) as committed in the database at URL ``db``."""
    return tuple(  # type: ignore[return-value]
        run_sql(db, f"SELECT count(*) FROM {table}")[0][0]
        for table in ("tasks", "deliveries", "quarantine")
    )


def assert_answer_shape(answer: httpx.Response) -> None:
    assert answer.status_code < 500, answer.text
    assert answer.headers["content-type"].startswith("application/json")
    body = answer.json()
    if answer.status_code == 200:
        assert body["ok"] is True and isinstance(body["task_id"], str)
    else:
        assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}


async def post_and_check(
    client: httpx.AsyncClient, db: str, provider: str, content: Any, **kwargs: Any
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


def db_of(app) -> str:
    return app.state.taskhook.settings.database_url


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
            client, config.database_url, "seedance", chunks() if chunked else body
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


# -- any character in a kept body (issue 10, item 3) ----------------------------------

#: JSON string contents that decode to text no plain UTF-8 encoder accepts, or that
#: pages tend to mangle: lone surrogates, NUL and control characters, other scripts.
ODD_TEXTS = {
    "lone low surrogate": "\\udc80",
    "lone high surrogate": "\\ud800x",
    "reversed pair": "\\ude00\\ud83d",
    "NUL": "a\\u0000b",
    "controls": "\\u0001\\u001f\\u007f",
    "other scripts": "中文 العربية русский 😀",
}


async def test_any_character_in_a_kept_body_is_shown_everywhere(app, client):
    """Lone surrogates, NUL, any script: kept byte for byte; every route and page answers."""
    db = db_of(app)
    for number, (name, text) in enumerate(ODD_TEXTS.items()):
        task_id = f"odd-{number}"
        merged = (
            f'{{"success": true, "task_id": "{task_id}", "trace_id": "{text}",'
            f' "data": {{"status": "running", "note": "{text}", "{text}": 1}}}}'
        ).encode()
        unmerged = f'{{"no id here": "{text}"}}'.encode()
        assert (await post_and_check(client, db, "seedance", merged)).status_code == 200, name
        assert (await post_and_check(client, db, "seedance", unmerged)).status_code == 422, name

        kept = (await client.get(f"/tasks/{task_id}/deliveries")).json()["deliveries"]
        assert kept[0]["body"]["data"]["note"] == json.loads(f'"{text}"'), name
        assert (await client.get(f"/tasks/{task_id}")).status_code == 200, name
        quarantined = (await client.get("/quarantine")).json()["items"][0]
        assert quarantined["body"].encode() == unmerged, name  # byte for byte
        for page in (f"/dashboard/tasks/{task_id}", "/dashboard/quarantine", "/dashboard"):
            answer = await client.get(page)
            assert answer.status_code == 200, (name, page)
            html = answer.content.decode("utf-8")  # the page itself is valid UTF-8
            if page != "/dashboard" and "surrogate" in name:
                # A lone surrogate reads as its escape, exactly as the sender wrote it.
                assert text.removesuffix("x") in html, (name, page)
            elif page != "/dashboard" and name == "other scripts":
                assert text in html, (name, page)
    assert (await client.get("/tasks")).status_code == 200


async def test_lone_surrogate_in_a_registration_is_refused_before_anything_is_written(app, client):
    db = db_of(app)
    before = counts(db)
    for body in (
        b'{"provider": "seedance", "task_id": "\\ud800"}',
        b'{"provider": "seedance", "task_id": "ok-1", "metadata": {"a": "\\udc80"}}',
        b'{"provider": "seedance", "task_id": "ok-2", "trace_id": "\\udfff"}',
    ):
        answer = await client.post("/tasks", content=body)
        assert answer.status_code == 400 and answer.json()["error"]["code"] == "not_json"
    assert counts(db) == before
    other = await client.post("/tasks", json={"provider": "seedance", "task_id": "z\u0000中😀"})
    assert other.status_code == 201
    assert (await client.get("/tasks/z%00%E4%B8%AD%F0%9F%98%80")).json()["task_id"] == "z\u0000中😀"


# -- numbers a double cannot hold (item 4) --------------------------------------------

NON_FINITE = ("NaN", "-NaN", "Infinity", "-Infinity", "1e999", "-1e400", "1" + "0" * 400)


@pytest.mark.parametrize("number", NON_FINITE)
async def test_non_finite_numbers_are_refused_at_the_door_and_nothing_is_written(
    app, client, number
):
    db = db_of(app)
    before = counts(db)
    for body in (
        f'{{"provider": "seedance", "task_id": "n-1", "metadata": {{"a": {number}}}}}',
        f'{{"tasks": [{{"provider": "seedance", "task_id": "n-2", "metadata": [{number}]}}]}}',
    ):
        answer = await client.post("/tasks", content=body.encode())
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"]["code"] == "not_json"
    assert counts(db) == before
    assert (await client.get("/tasks")).json()["tasks"] == []
    assert (await client.get("/tasks/n-1")).status_code == 404

    callback = (
        f'{{"success": true, "task_id": "n-3", "data": {{"status": "running", "x": {number}}}}}'
    )
    answer = await post_and_check(client, db, "seedance", callback.encode())
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "not_json"
    assert (await client.get("/tasks/n-3")).status_code == 404
    assert (await client.get("/quarantine")).json()["items"][0]["body"] == callback


async def test_the_largest_numbers_a_double_holds_are_accepted(client):
    metadata = {"max": 1.7976931348623157e308, "tiny": 5e-324, "big": 10**308}
    answer = await client.post(
        "/tasks", json={"provider": "seedance", "task_id": "big-1", "metadata": metadata}
    )
    assert answer.status_code == 201 and answer.json()["metadata"] == metadata


# -- parameters (item 9) --------------------------------------------------------------

#: Values that look like numbers to ``str.isdigit`` or ``int`` but are not what a route takes.
BAD_NUMBERS = ("²", "١٢", "1_0", " 5", "+5", "-1", "0x10", "1e3", "9" * 30, str(2**63), str(2**64))


@pytest.mark.parametrize("value", BAD_NUMBERS)
async def test_bad_numbers_in_parameters_are_400_or_404_never_500(client, value):
    for path, status in (
        (f"/tasks?limit={value}", 400),
        (f"/quarantine?limit={value}", 400),
        (f"/quarantine?cursor={value}", 400),
        (f"/tasks?cursor={value}", 400),
        (f"/dashboard?cursor={value}", 400),
        (f"/dashboard/quarantine?cursor={value}", 400),
        (f"/dashboard/quarantine?failed={value}", 400),
        (f"/dashboard/stuck?hours={value}", None),
    ):
        answer = await client.get(path, params=None)
        if status is None:
            assert answer.status_code in (200, 400), (path, answer.text)
        else:
            assert answer.status_code == status, (path, answer.text)
    for method, path in (
        ("POST", f"/quarantine/{value}/replay"),
        ("DELETE", f"/quarantine/{value}"),
    ):
        answer = await client.request(method, path)
        assert answer.status_code == 404, (path, answer.text)
        assert answer.json()["error"]["code"] == "not_found"


async def test_cursors_past_64_bits_are_refused(client):
    import base64

    for number in (2**63, 2**64, 10**30, -1):
        cursor = base64.urlsafe_b64encode(str(number).encode()).decode()
        answer = await client.get("/tasks", params={"cursor": cursor})
        assert answer.status_code == 400 and answer.json()["error"]["code"] == "invalid_cursor"


@HYPOTHESIS
@given(
    name=st.sampled_from(["limit", "cursor", "status", "provider", "hours", "failed", "q"]),
    value=st.one_of(
        st.text(max_size=30),
        st.integers(min_value=-(2**80), max_value=2**80).map(str),
        st.sampled_from(BAD_NUMBERS),
    ),
    path=st.sampled_from(
        ["/tasks", "/quarantine", "/dashboard", "/dashboard/quarantine", "/dashboard/stuck"]
    ),
)
async def test_any_query_parameter_value_is_never_a_server_error(client, name, value, path):
    answer = await client.get(path, params={name: value})
    assert answer.status_code in (200, 400), (path, name, value, answer.text[:200])


@HYPOTHESIS
@given(task_id=st.text(min_size=1, max_size=60))
async def test_any_task_id_can_be_registered_and_read_back(client, task_id):
    answer = await client.post("/tasks", json={"provider": "seedream", "task_id": task_id})
    usable = task_id.strip().replace("-", "") != "" and _encodable(task_id)
    if not usable:
        assert answer.status_code in (400, 422), answer.text
        return
    assert answer.status_code == 201, answer.text
    stored = answer.json()["task_id"]
    segment = quote(stored.encode(), safe="").replace(".", "%2E")  # clients drop "." segments
    found = await client.get(f"/tasks/{segment}")
    assert found.status_code == 200 and found.json()["task_id"] == stored
    kept = await client.get(f"/tasks/{segment}/deliveries")
    assert kept.status_code == 200 and kept.json()["task_id"] == stored
    page = await client.get(f"/dashboard/tasks/{segment}")
    assert page.status_code == 200, ascii(stored)


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


async def test_a_task_id_with_a_slash_is_readable(client):
    for task_id in ("a/b", "a/b/c", "x/deliveries", "/lead", "%2F", "a%2Fb"):
        registered = await client.post("/tasks", json={"provider": "seedance", "task_id": task_id})
        assert registered.status_code == 201, task_id
        encoded = quote(task_id, safe="")
        assert (await client.get(f"/tasks/{encoded}")).json()["task_id"] == task_id
        deliveries = await client.get(f"/tasks/{encoded}/deliveries")
        assert deliveries.json() == {"task_id": task_id, "deliveries": []}
    # Unencoded slashes read the same task, and a last "deliveries" names its deliveries.
    assert (await client.get("/tasks/a/b")).json()["task_id"] == "a/b"
    assert (await client.get("/tasks/a/b/deliveries")).json()["task_id"] == "a/b"
    assert (await client.get("/tasks/x%2Fdeliveries")).json()["task_id"] == "x/deliveries"


@pytest.mark.parametrize("task_id", ["-", "---", " - ", "\t--\n"])
async def test_ids_made_of_dashes_only_are_refused(app, client, task_id):
    db = db_of(app)
    answer = await client.post("/tasks", json={"provider": "seedance", "task_id": task_id})
    assert answer.status_code == 422 and answer.json()["error"]["code"] == "invalid_task"
    callback = dumps({"success": True, "task_id": task_id, "data": {"status": "running"}})
    refused = await post_and_check(client, db, "seedance", callback)
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "no_task_id"
    assert (await client.get("/tasks")).json()["tasks"] == []


# -- nesting, readiness (item 17) -----------------------------------------------------


async def test_metadata_nested_past_the_cap_is_refused_and_at_the_cap_renders(app, client):
    from server.web.routes.body import MAX_DEPTH

    def deep(levels: int) -> str:
        return '{"a":' * levels + "1" + "}" * levels

    too_deep = f'{{"provider": "seedance", "task_id": "deep-x", "metadata": {deep(960)}}}'
    answer = await client.post("/tasks", content=too_deep.encode())
    assert answer.status_code == 400 and "deeper than" in answer.json()["error"]["message"]
    assert (await client.get("/tasks/deep-x")).status_code == 404

    fits = f'{{"provider": "seedance", "task_id": "deep-ok", "metadata": {deep(MAX_DEPTH - 1)}}}'
    assert (await client.post("/tasks", content=fits.encode())).status_code == 201
    assert (await client.get("/dashboard/tasks/deep-ok")).status_code == 200
    assert (await client.get("/tasks/deep-ok")).status_code == 200


class BrokenService:
    name = "broken"

    def __init__(self, error: BaseException | None = None, answer: Any = None) -> None:
        self.error, self.answer = error, answer

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def status(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.answer


@pytest.mark.parametrize(
    "service",
    [
        BrokenService(RuntimeError("status exploded")),
        BrokenService(answer=None),
        BrokenService(answer={"ok": True, "paused_until": float("nan")}),
        BrokenService(answer={"ok": False}),
    ],
    ids=["raises", "answers None", "answers NaN", "not ok without reason"],
)
async def test_readyz_says_503_with_the_reason_when_a_service_status_breaks(app, client, service):
    await app.state.taskhook.services.start(service)
    answer = await client.get("/readyz")
    assert answer.status_code == 503, answer.text
    body = answer.json()
    assert body["ok"] is False and any(r.startswith("broken: ") for r in body["reasons"])
    assert (await client.get("/dashboard/health")).status_code == 200


# -- no secret in any answer (item 12) ------------------------------------------------


async def test_no_answer_echoes_a_near_miss_callback_path(client):
    from server.core.tokens import callback_token

    from .harness import CALLBACK_SECRET

    token = callback_token(CALLBACK_SECRET, "seedance")
    near_misses = [
        f"/callbacks//seedance/{token}",
        f"/CALLBACKS/seedance/{token}",
        f"/callbacks/seedance/x/{token}",
        f"/callbacks/seed%2Fance/{token}",
        f"/callbacks/{token}/seedance",
        f"/callbacks/{token}",
        f"/{token}",
        f"/tasks/x/{token}/y",
        f"/callbacks/seedance/{token}/",
    ]
    for path in near_misses:
        for method in ("GET", "POST", "PUT", "DELETE", "PATCH"):
            answer = await client.request(method, path, content=b"{}")
            assert token not in answer.text, (method, path, answer.text)
            assert answer.status_code < 500
