"""``/endpoints`` and redelivery over HTTP (in-process app, real SQLite store)."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from server.web.runtime import Runtime
from tests.harness import API_TOKEN, run_sql
from tests.test_error_shape import assert_error_shape

from .outbox import add_events

HOOK = "http://127.0.0.1:9/hook"


def store_of(app) -> object:
    rt: Runtime = app.state.taskhook
    return rt.store


async def create(client, **body):
    answer = await client.post("/endpoints", json={"url": HOOK, **body})
    assert answer.status_code == 201, answer.text
    return answer.json()


async def test_create_answers_201_with_the_secret_once(client):
    body = await create(client, events=["task.succeeded"], description="app")
    assert body["id"].startswith("ep_")
    assert body["url"] == HOOK and body["events"] == ["task.succeeded"]
    assert body["description"] == "app" and body["disabled"] is False
    assert body["secret"].startswith("whsec_")
    assert datetime.fromisoformat(body["created_at"]).tzinfo is not None
    shown = (await client.get(f"/endpoints/{body['id']}")).json()
    assert "secret" not in shown and shown["id"] == body["id"]
    listed = (await client.get("/endpoints")).json()["items"]
    assert [e["id"] for e in listed] == [body["id"]]
    assert all("secret" not in e for e in listed)
    assert body["secret"] not in (await client.get("/endpoints")).text


async def test_every_type_when_events_is_absent(client):
    body = await create(client)
    assert body["events"] is None


@pytest.mark.parametrize(
    "body, fragment",
    [
        ({"url": "ftp://example.com/x"}, "http:// or https://"),
        ({"url": "http:///path"}, "names no host"),
        ({"url": "https://example.com/#frag"}, "fragment"),
        ({"url": "https://exa mple.com/"}, "whitespace"),
        ({"url": "https://example.com:99999/"}, "not a valid URL"),
        ({"url": "https://e.com/" + "a" * 2000}, "at most 2000"),
        ({"url": 5}, "non-empty string"),
        ({}, "non-empty string"),
        ({"url": HOOK, "events": []}, "non-empty list"),
        ({"url": HOOK, "events": "task.succeeded"}, "non-empty list"),
        ({"url": HOOK, "events": ["task.done"]}, "'task.done'"),
        ({"url": HOOK, "description": 7}, "description"),
        ({"url": HOOK, "event": ["task.failed"]}, "unknown field 'event'"),
    ],
)
async def test_bad_fields_are_400_saying_which(client, body, fragment):
    answer = await client.post("/endpoints", json=body)
    assert_error_shape(answer, 400, "invalid_endpoint")
    assert fragment in answer.json()["error"]["message"]


async def test_a_body_that_is_not_an_object_is_400(client):
    assert_error_shape(await client.post("/endpoints", json=[HOOK]), 400, "invalid_endpoint")


async def test_private_and_loopback_urls_are_allowed(client):
    for url in ("http://10.0.0.5:8080/hooks", "http://localhost/x", "https://[::1]:8443/"):
        assert (await client.post("/endpoints", json={"url": url})).status_code == 201


async def test_every_route_needs_the_bearer(client):
    no = {"authorization": ""}
    for method, path in [
        ("POST", "/endpoints"),
        ("GET", "/endpoints"),
        ("GET", "/endpoints/ep_x"),
        ("DELETE", "/endpoints/ep_x"),
        ("POST", "/endpoints/ep_x/rotate-secret"),
        ("POST", "/endpoints/ep_x/enable"),
        ("GET", "/endpoints/ep_x/attempts"),
        ("POST", "/endpoints/ep_x/recover?since=2026-01-01T00:00:00Z"),
        ("POST", "/events/evt_x/redeliver"),
    ]:
        assert_error_shape(await client.request(method, path, headers=no), 401, "unauthorized")


async def test_delete_then_404(client):
    body = await create(client)
    assert (await client.delete(f"/endpoints/{body['id']}")).status_code == 204
    assert_error_shape(await client.get(f"/endpoints/{body['id']}"), 404, "unknown_endpoint")
    assert_error_shape(await client.delete(f"/endpoints/{body['id']}"), 404, "unknown_endpoint")


async def test_rotation_answers_the_new_secret_and_when_the_old_stops(client):
    body = await create(client)
    answer = await client.post(f"/endpoints/{body['id']}/rotate-secret")
    assert answer.status_code == 200
    rotated = answer.json()
    assert rotated["secret"].startswith("whsec_") and rotated["secret"] != body["secret"]
    expires = datetime.fromisoformat(rotated["previous_secret_expires_at"]).timestamp()
    assert abs(expires - (time.time() + 24 * 3600)) < 60
    assert_error_shape(await client.post("/endpoints/ep_nope/rotate-secret"), 404)


async def test_enable_an_enabled_endpoint_changes_nothing(client):
    body = await create(client)
    answer = await client.post(f"/endpoints/{body['id']}/enable")
    assert answer.status_code == 200 and answer.json()["disabled"] is False
    assert_error_shape(await client.post("/endpoints/ep_nope/enable"), 404, "unknown_endpoint")


async def test_attempts_parameters_are_checked(client):
    body = await create(client)
    base = f"/endpoints/{body['id']}/attempts"
    assert (await client.get(base)).json() == {"items": [], "next_cursor": None}
    assert (await client.get(f"{base}?outcome=failed&limit=500")).status_code == 200
    for query in ("outcome=ok", "limit=0", "limit=501", "limit=x", "limit=%C2%B2"):
        assert_error_shape(await client.get(f"{base}?{query}"), 400, "invalid_filter")
    assert_error_shape(await client.get(f"{base}?cursor=zz"), 400, "invalid_cursor")
    assert_error_shape(await client.get("/endpoints/ep_nope/attempts"), 404, "unknown_endpoint")


async def test_redeliver_checks_the_event_and_the_endpoint(app, client):
    store = store_of(app)
    finals = await create(client, events=["task.succeeded"])
    (eid,) = await add_events(store, ("task.status_changed", "a"))
    assert_error_shape(await client.post("/events/evt_nope/redeliver"), 404, "not_found")
    assert_error_shape(
        await client.post(f"/events/{eid}/redeliver?endpoint=ep_nope"), 404, "unknown_endpoint"
    )
    assert_error_shape(
        await client.post(f"/events/{eid}/redeliver?endpoint={finals['id']}"),
        409,
        "not_subscribed",
    )
    answer = await client.post(f"/events/{eid}/redeliver")
    assert answer.status_code == 202
    assert answer.json() == {"event_id": eid, "endpoints": []}  # no endpoint ever had it


async def test_redeliver_and_recover_refuse_a_disabled_endpoint(app, client):
    store = store_of(app)
    body = await create(client)
    run_sql(  # what a 410 does
        store.settings.database_url,
        "UPDATE endpoints SET disabled_at = 1, disabled_reason = 'gone' WHERE id = ?",
        (body["id"],),
    )
    (eid,) = await add_events(store, ("task.status_changed", "a"))
    assert_error_shape(
        await client.post(f"/events/{eid}/redeliver?endpoint={body['id']}"),
        409,
        "endpoint_disabled",
    )
    assert_error_shape(
        await client.post(f"/endpoints/{body['id']}/recover?since=2026-01-01T00:00:00Z"),
        409,
        "endpoint_disabled",
    )
    shown = (await client.get(f"/endpoints/{body['id']}")).json()
    assert shown["disabled"] is True and shown["disabled_reason"] == "gone"
    enabled = await client.post(f"/endpoints/{body['id']}/enable")
    assert enabled.json()["disabled"] is False


async def test_recover_needs_an_iso_time(client):
    body = await create(client)
    base = f"/endpoints/{body['id']}/recover"
    for query in ("", "?since=", "?since=yesterday", "?since=2026-13-01"):
        assert_error_shape(await client.post(base + query), 400, "invalid_filter")
    answer = await client.post(f"{base}?since=2026-01-01T00:00:00%2B02:00")
    assert answer.status_code == 202
    assert answer.json() == {
        "endpoint": body["id"],
        "since": "2025-12-31T22:00:00Z",
        "recovered": 0,
    }
    assert (await client.post(f"{base}?since=2026-01-01")).json()["since"] == (
        datetime(2026, 1, 1, tzinfo=UTC).isoformat().replace("+00:00", "Z")
    )
    assert_error_shape(
        await client.post("/endpoints/ep_nope/recover?since=2026-01-01"), 404, "unknown_endpoint"
    )


async def test_the_openapi_schema_lists_every_endpoint_route(client):
    paths = (await client.get("/openapi.json")).json()["paths"]
    for path in (
        "/endpoints",
        "/endpoints/{endpoint_id}",
        "/endpoints/{endpoint_id}/rotate-secret",
        "/endpoints/{endpoint_id}/enable",
        "/endpoints/{endpoint_id}/attempts",
        "/endpoints/{endpoint_id}/recover",
        "/events/{event_id}/redeliver",
    ):
        assert path in paths
        for operation in paths[path].values():
            assert operation["security"] == [{"bearer": []}]
    assert API_TOKEN  # the client fixture sends it
