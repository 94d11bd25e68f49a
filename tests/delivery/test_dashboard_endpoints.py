"""The dashboard's endpoint pages: state, attempts, failures, redeliver and enable (CSRF)."""

from __future__ import annotations

import httpx
import pytest

from server.core.delivery_schedule import Answer, after_attempt
from server.store.webhooks import Attempt
from tests.harness import API_TOKEN
from tests.test_dashboard import csrf_of, sign_in

from .outbox import add_events


@pytest.fixture
async def browser(app):
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://taskhook.test") as c:
        yield c


async def failed_attempt(store, status=500):
    """One endpoint, one event, one attempt that failed for good (schedule of one)."""
    ep = await store.create_endpoint("http://127.0.0.1:9/h", None, "the app", "whsec_" + "QUFB" * 8)
    (eid,) = await add_events(store, ("task.succeeded", "<script>x</script>"))
    (item,) = (await store.claim_messages("h", 5, 5, 60)).items
    nxt = after_attempt(
        Answer(status), schedule=(0.0,), scheduled=0, manual=False, resume_at=None, now=0.0
    )
    record = Attempt(eid, 1, 1.0, nxt.outcome, status, 12, "<b>nope</b>", None)
    await store.finish_message(item, "h", record, nxt)
    return ep, eid


async def test_the_list_and_the_page_show_state_failures_and_attempts(app, client):
    store = app.state.taskhook.store
    ep, eid = await failed_attempt(store)
    listed = await client.get("/dashboard/endpoints")
    assert (
        listed.status_code == 200 and ep.id in listed.text and "http://127.0.0.1:9/h" in listed.text
    )
    page = await client.get(f"/dashboard/endpoints/{ep.id}")
    assert page.status_code == 200
    assert "Recent failures" in page.text and eid in page.text
    assert "&lt;b&gt;nope&lt;/b&gt;" in page.text and "<b>nope</b>" not in page.text
    assert f"/dashboard/endpoints/{ep.id}/redeliver/{eid}" in page.text
    assert "the app" in page.text
    assert (await client.get("/dashboard/endpoints/ep_nope")).status_code == 404


async def test_redeliver_needs_the_session_csrf_token_and_queues_the_event(app, browser):
    store = app.state.taskhook.store
    ep, eid = await failed_attempt(store)
    await sign_in(browser)
    url = f"/dashboard/endpoints/{ep.id}/redeliver/{eid}"
    assert (await browser.post(url, data={})).status_code == 403
    assert (await browser.post(url, data={"csrf": "0" * 64})).status_code == 403
    assert (await store.webhook_backlog())[0].pending == 0
    page = await browser.get(f"/dashboard/endpoints/{ep.id}")
    done = await browser.post(url, data={"csrf": csrf_of(page.text)})
    assert done.status_code == 303
    assert done.headers["location"] == f"/dashboard/endpoints/{ep.id}?redelivered={eid}"
    assert (await store.webhook_backlog())[0].pending == 1
    shown = await browser.get(done.headers["location"])
    assert "will be sent again now" in shown.text


async def test_a_disabled_endpoint_shows_why_and_can_be_enabled(app, browser):
    store = app.state.taskhook.store
    ep, _ = await failed_attempt(store, status=410)
    await sign_in(browser)
    page = await browser.get(f"/dashboard/endpoints/{ep.id}")
    assert "disabled" in page.text and "410 Gone" in page.text
    assert "/redeliver/" not in page.text
    enable = f"/dashboard/endpoints/{ep.id}/enable"
    assert (await browser.post(enable, data={})).status_code == 403
    done = await browser.post(enable, data={"csrf": csrf_of(page.text)})
    assert done.status_code == 303
    assert not (await store.get_endpoint(ep.id)).disabled


async def test_forms_without_a_session_are_401(app, browser):
    store = app.state.taskhook.store
    ep, eid = await failed_attempt(store)
    answer = await browser.post(f"/dashboard/endpoints/{ep.id}/redeliver/{eid}")
    assert answer.status_code == 401
    assert API_TOKEN not in answer.text
