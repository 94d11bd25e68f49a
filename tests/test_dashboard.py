"""/dashboard: access control, escaping, CSRF, and the pages' contents."""

from __future__ import annotations

import html
import json
import re
import time
import uuid
from http.cookies import SimpleCookie

import httpx
import pytest

from server.core.ids import task_key
from server.core.types import iso_time
from server.ingest import answer
from server.web import session
from server.web.routes.dashboard_auth import ago
from server.web.routes.dashboard_views import http_url
from server.web.routes.dashboard_views import result_view as _result_view

from .conftest import callback_path
from .harness import API_TOKEN, run_sql
from .payloads import dumps, seedance, seedream


@pytest.fixture
async def browser(app):
    """A client without bearer header, like a browser before sign-in."""
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://taskhook.test"
    ) as c:
        yield c


async def sign_in(browser) -> str:
    answer = await browser.post("/dashboard/login", data={"token": API_TOKEN, "next": "/dashboard"})
    assert answer.status_code == 303
    return answer.headers["set-cookie"]


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf" value="([0-9a-f]+)"', html).group(1)


@pytest.mark.parametrize(
    "path",
    [
        "/dashboard",
        "/dashboard/stuck",
        "/dashboard/quarantine",
        "/dashboard/health",
        "/dashboard/tasks/anything",
    ],
)
async def test_pages_redirect_to_login_without_a_session(browser, path):
    answer = await browser.get(path)
    assert answer.status_code == 303
    assert answer.headers["location"].startswith("/dashboard/login?next=")


async def test_wrong_token_shows_an_error_and_sets_no_cookie(browser):
    answer = await browser.post("/dashboard/login", data={"token": "nope"})
    assert answer.status_code == 401
    assert "That is not the API token." in answer.text
    assert "set-cookie" not in answer.headers


async def test_right_token_sets_a_strict_httponly_cookie_not_the_token(browser):
    header = await sign_in(browser)
    cookie = SimpleCookie(header)[session.COOKIE_NAME]
    assert "httponly" in header.lower() and "samesite=strict" in header.lower()
    assert cookie["path"] == "/dashboard"
    assert API_TOKEN not in cookie.value
    assert session.session_valid(API_TOKEN, cookie.value, time.time())
    page = await browser.get("/dashboard")
    assert page.status_code == 200 and "<h1>Tasks</h1>" in page.text
    assert "script-src" not in page.headers["content-security-policy"]  # default-src 'none'


async def test_forged_or_expired_cookies_are_refused(browser):
    now = time.time()
    old = session.new_session(API_TOKEN, now - session.SESSION_MAX_AGE - 1)
    forged = session.new_session("another-token", now)
    for value in (old, forged, "123.abc", "garbage"):
        browser.cookies.set(session.COOKIE_NAME, value, domain="taskhook.test", path="/dashboard")
        assert (await browser.get("/dashboard")).status_code == 303
        browser.cookies.clear()


async def test_bearer_header_works_without_cookie(client):
    answer = await client.get("/dashboard")
    assert answer.status_code == 200 and "Tasks" in answer.text


async def test_login_next_is_kept_but_never_leaves_the_dashboard(browser):
    inside = await browser.post(
        "/dashboard/login", data={"token": API_TOKEN, "next": "/dashboard/quarantine"}
    )
    assert inside.headers["location"] == "/dashboard/quarantine"
    for target in ("https://evil.example/", "//evil.example/dashboard", "/tasks"):
        outside = await browser.post("/dashboard/login", data={"token": API_TOKEN, "next": target})
        assert outside.headers["location"] == "/dashboard"


async def test_overview_counts_filters_and_search(client):
    ids = [str(uuid.uuid4()) for _ in range(3)]
    for task_id in ids[:2]:
        await client.post(callback_path("seedance"), content=dumps(seedance(task_id)))
    await client.post(callback_path("seedream"), content=dumps(seedream(ids[2])))
    pending = str(uuid.uuid4())
    await client.post("/tasks", json={"provider": "dreamina", "task_id": pending})

    everything = (await client.get("/dashboard")).text
    assert all(t in everything for t in [*ids, pending])
    assert everything.index(pending) < everything.index(ids[0])  # newest first

    only_seedream = (await client.get("/dashboard?provider=seedream")).text
    assert ids[2] in only_seedream and ids[0] not in only_seedream
    only_pending = (await client.get("/dashboard?status=pending")).text
    assert pending in only_pending and ids[2] not in only_pending

    by_id = (await client.get("/dashboard", params={"q": ids[1].replace("-", "").upper()})).text
    assert ids[1] in by_id and ids[0] not in by_id
    missing = (await client.get("/dashboard", params={"q": "no-such-task"})).text
    assert "No task matches" in missing


async def test_overview_pages_with_the_store_cursor(client, monkeypatch):
    monkeypatch.setattr("server.web.routes.dashboard.PAGE_SIZE", 2)
    ids = [str(uuid.uuid4()) for _ in range(3)]
    for task_id in ids:
        await client.post("/tasks", json={"provider": "seedance", "task_id": task_id})
    first = (await client.get("/dashboard")).text
    assert ids[2] in first and ids[1] in first and ids[0] not in first
    older = re.search(r'href="/dashboard(\?[^"]*cursor=\d+[^"]*)">Older', first).group(1)
    second = (await client.get("/dashboard" + older.replace("&amp;", "&"))).text
    assert ids[0] in second and ids[2] not in second and "Older" not in second


async def test_task_page_shows_state_results_and_timeline(client):
    task_id = str(uuid.uuid4())
    await client.post(callback_path("seedance"), content=dumps(seedance(task_id, "running", False)))
    await client.post(callback_path("seedance"), content=dumps(seedance(task_id)))
    await client.post(callback_path("seedance"), content=dumps(seedance(task_id, "running", False)))
    html = (await client.get(f"/dashboard/tasks/{task_id.upper()}")).text
    assert task_id in html
    assert f'href="https://cdn.example/seedance/{task_id}.mp4"' in html  # not archived: link
    assert html.count('<li class="changed">') == 2 and html.count('<li class="same">') == 1
    assert "none (final)" in html
    missing = await client.get("/dashboard/tasks/unknown-task")
    assert missing.status_code == 404 and "No such task" in missing.text


def test_task_page_previews_archived_results_and_drops_unsafe_links():
    sha = "ab" * 32
    archived = _result_view(
        {"url": "https://x/a.jpg", "kind": "image", "archived": {"sha256": sha, "url": "/files"}}
    )
    assert archived["local"] == f"/dashboard/files/{sha}"
    hostile = _result_view({"url": "javascript:alert(1)", "kind": "image"})
    assert hostile["link"] is None and hostile["local"] is None
    assert http_url("https://ok.example/x") == "https://ok.example/x"


async def test_script_in_task_id_and_quarantine_body_is_escaped(client):
    evil = "<script>alert(1)</script>"
    await client.post("/tasks", json={"provider": "seedance", "task_id": evil})
    await client.post(callback_path("seedance"), content=evil.encode())  # not JSON: quarantined
    for path in ("/dashboard", "/dashboard/quarantine"):
        html = (await client.get(path)).text
        assert evil not in html
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


async def test_stuck_lists_old_unfinished_tasks_with_next_check(client, settings):
    old, fresh = str(uuid.uuid4()), str(uuid.uuid4())
    await client.post("/tasks", json={"provider": "seedance", "task_id": old})
    await client.post("/tasks", json={"provider": "seedance", "task_id": fresh})
    done = str(uuid.uuid4())
    await client.post(callback_path("seedance"), content=dumps(seedance(done)))
    # Age one task by rewriting its registration time in the database.
    run_sql(
        settings.database_url,
        "UPDATE tasks SET created_at = created_at - 7200 WHERE task_id = ?",
        (old,),
    )
    html = (await client.get("/dashboard/stuck")).text
    assert old in html and fresh not in html and done not in html
    everything = (await client.get("/dashboard/stuck?hours=0")).text
    assert old in everything and fresh in everything and done not in everything


async def test_replay_needs_the_session_csrf_token(browser, client):
    await sign_in(browser)
    await client.post(callback_path("seedream"), content=b"{}")  # no task id: quarantined
    item = (await client.get("/quarantine")).json()["items"][0]
    page = await browser.get("/dashboard/quarantine")
    assert f"/dashboard/quarantine/{item['id']}/replay" in page.text
    url = f"/dashboard/quarantine/{item['id']}/replay"

    assert (await browser.post(url, data={})).status_code == 403
    assert (await browser.post(url, data={"csrf": "0" * 64})).status_code == 403
    other_session = session.new_session(API_TOKEN, time.time() - 5)
    stolen = session.csrf_token(API_TOKEN, other_session)
    assert (await browser.post(url, data={"csrf": stolen})).status_code == 403
    assert (await client.get("/quarantine")).json()["items"]  # still there

    # Still not mergeable: stays, and the page says why.
    failed = await browser.post(url, data={"csrf": csrf_of(page.text)})
    assert failed.status_code == 303 and "failed=" in failed.headers["location"]
    assert "still cannot be merged" in (await browser.get(failed.headers["location"])).text


async def test_replay_with_the_right_token_merges_and_removes(browser, client, app):
    await sign_in(browser)
    task_id = str(uuid.uuid4())
    body = dumps(seedance(task_id))
    store = app.state.taskhook.store
    quarantine_id = await store.quarantine("seedance", body, {}, "no_task_id", "simulated")
    page = await browser.get("/dashboard/quarantine")
    answer = await browser.post(
        f"/dashboard/quarantine/{quarantine_id}/replay", data={"csrf": csrf_of(page.text)}
    )
    assert answer.status_code == 303 and f"replayed={quarantine_id}" in answer.headers["location"]
    shown = (await browser.get(answer.headers["location"])).text
    assert f"Delivery {quarantine_id} merged" in shown and task_id in shown
    assert (await client.get(f"/tasks/{task_id}")).json()["status"] == "succeeded"
    assert (await client.get("/quarantine")).json()["items"] == []


async def test_replay_without_a_session_is_401(browser, app):
    store = app.state.taskhook.store
    quarantine_id = await store.quarantine("seedance", b"{}", {}, "no_task_id", "simulated")
    answer = await browser.post(f"/dashboard/quarantine/{quarantine_id}/replay", data={})
    assert answer.status_code == 401


async def test_logout_needs_csrf_and_clears_the_cookie(browser):
    await sign_in(browser)
    page = await browser.get("/dashboard")
    assert (await browser.post("/dashboard/logout", data={})).status_code == 403
    out = await browser.post("/dashboard/logout", data={"csrf": csrf_of(page.text)})
    assert out.status_code == 303 and session.COOKIE_NAME in out.headers["set-cookie"]
    assert (await browser.get("/dashboard")).status_code == 303


class FakeReconciler:
    name = "reconciler"

    async def start(self):
        return None

    async def stop(self):
        return None

    async def status(self):
        return {
            "ok": False,
            "reason": "seedance2: unauthorized",
            "providers": {"seedance2": {"state": "unauthorized", "reason": "401 from upstream"}},
        }


async def test_health_shows_each_provider(client, app):
    html = (await client.get("/dashboard/health")).text
    assert "not running" in html
    assert all(p in html for p in ("seedream", "seedance", "dreamina", "seedance2"))
    await app.state.taskhook.services.start(FakeReconciler())
    html = (await client.get("/dashboard/health")).text
    assert "not running" not in html and "401 from upstream" in html and "trouble" in html


async def test_files_proxy_needs_a_session_and_a_sha(browser):
    sha = "cd" * 32
    assert (await browser.get(f"/dashboard/files/{sha}")).status_code == 401
    await sign_in(browser)
    assert (await browser.get("/dashboard/files/not-a-sha")).status_code == 404
    # With a session it reaches the /files route (404 here: nothing archived, or no route yet).
    assert (await browser.get(f"/dashboard/files/{sha}")).status_code == 404


def test_relative_times():
    assert ago(100.0, now=400.0) == "5 min ago"
    assert ago(500.0, now=400.0) == "in 1 min"
    assert ago(None) == "—"


# -- issue 17: what an operator sees ---------------------------------------------------


async def fail_archive(store, task_id: str, url: str) -> None:
    """Fail the copy of ``url`` for good, through the store, as the archiver does."""
    await store.enqueue_missing_archives()
    jobs = await store.claim_archives("test-archiver", 100, 60)
    (job,) = [j for j in jobs if j.task_key == task_key(task_id) and j.url == url]
    await store.fail_archive(
        job,
        "test-archiver",
        "too_large",
        "the file is 3000000000 bytes, over ARCHIVE_MAX_BYTES",
        None,
    )
    await store.release_archives("test-archiver")


async def test_archive_error_reads_as_words_not_a_python_dict(client, app):
    task_id = str(uuid.uuid4())
    body = seedance(task_id)
    long_url = "https://cdn.example/" + "a" * 600 + ".mp4"
    body["data"]["video_url"] = long_url
    await client.post(callback_path("seedance"), content=dumps(body))
    await fail_archive(app.state.taskhook.store, task_id, long_url)
    html = (await client.get(f"/dashboard/tasks/{task_id}")).text
    assert "Not archived: the file is 3000000000 bytes, over ARCHIVE_MAX_BYTES (too_large)" in html
    assert "1 attempt · given up" in html
    assert "{&#39;code&#39;" not in html and "{'code'" not in html
    assert f'<a class="wrap" href="{long_url}"' in html  # the long URL may wrap


async def test_a_conflicting_final_shows_as_a_conflict_not_a_change(client):
    task_id = str(uuid.uuid4())
    await client.post(callback_path("seedance"), content=dumps(seedance(task_id)))
    failed = {
        "success": False,
        "task_id": task_id,
        "error": {"code": "content_policy", "message": "refused late"},
    }
    assert (await client.post(callback_path("seedance"), content=dumps(failed))).status_code == 200
    html = (await client.get(f"/dashboard/tasks/{task_id}")).text
    assert html.count('<li class="changed">') == 1  # the first final report
    assert html.count('<li class="conflict">') == 1
    assert "conflicting final report: recorded, not applied" in html
    assert "Conflicting final reports" in html and "refused late" in html


async def test_a_pending_task_with_no_delivery_shows_no_last_source(client, app):
    task_id = str(uuid.uuid4())
    await client.post("/tasks", json={"provider": "seedance", "task_id": task_id})
    store = app.state.taskhook.store
    await store.ingest(answer("seedance", task_id, None, None))  # a check that heard nothing
    assert (await store.get_task(task_id)).last_source == "reconcile"
    html = (await client.get(f"/dashboard/tasks/{task_id}")).text
    assert re.search(r"<dt>Last source</dt><dd>—</dd>", html)


@pytest.mark.parametrize(
    "path, words",
    [
        ("/dashboard?status=bogus", "status 'bogus' is not one of"),
        ("/dashboard?provider=acme", "provider 'acme' is not one of"),
        ("/dashboard?concern=everything", "concern 'everything' is not one of"),
        ("/dashboard?cursor=abc", "cursor 'abc' is not one this API gave out"),
        ("/dashboard?status=failed&concern=conflicts", "not both at once"),
        ("/dashboard/stuck?hours=abc", "hours 'abc' must be a number of hours"),
        ("/dashboard/stuck?hours=-1", "hours '-1' must be a number of hours"),
        ("/dashboard/stuck?hours=nan", "hours 'nan' must be a number of hours"),
        ("/dashboard/quarantine?cursor=²", "cursor '²' is not one this API gave out"),
        ("/dashboard/quarantine?failed=x", "failed 'x' is not one this API gave out"),
    ],
)
async def test_bad_filters_answer_400_with_a_clear_message(client, path, words):
    answer = await client.get(path)
    assert answer.status_code == 400
    assert answer.headers["content-type"].startswith("text/html")
    assert words in html.unescape(answer.text)


async def test_search_by_an_id_prefix_of_at_least_eight_characters(client):
    ids = ["0a1b2c3d-0000-4000-8000-00000000000" + str(n) for n in range(3)]
    other = "ffffffff-0000-4000-8000-000000000000"
    for task_id in [*ids, other]:
        await client.post("/tasks", json={"provider": "seedance", "task_id": task_id})
    found = (await client.get("/dashboard", params={"q": "0A1B2C3D"})).text
    assert all(task_id in found for task_id in ids) and other not in found
    narrower = (await client.get("/dashboard", params={"q": "0a1b2c3d0000400080000000000000"})).text
    assert all(task_id in narrower for task_id in ids)
    one = (await client.get("/dashboard", params={"q": ids[1][:-1] + "1"})).text
    assert ids[1] in one and ids[0] not in one
    short = (await client.get("/dashboard", params={"q": "0a1b2c3"})).text
    assert ids[0] not in short and "at least 8 of its characters" in short


async def test_overview_shows_conflicts_failed_copies_and_gap_filled_tasks(client, app):
    store = app.state.taskhook.store
    conflicted, copy_failed, gap_filled, plain = (str(uuid.uuid4()) for _ in range(4))
    await client.post(callback_path("seedance"), content=dumps(seedance(conflicted)))
    late = {"success": False, "task_id": conflicted, "error": {"code": "x", "message": "late"}}
    await client.post(callback_path("seedance"), content=dumps(late))
    await client.post(callback_path("seedance"), content=dumps(seedance(copy_failed)))
    await fail_archive(store, copy_failed, f"https://cdn.example/seedance/{copy_failed}.mp4")
    await client.post("/tasks", json={"provider": "seedream", "task_id": gap_filled})
    found = dumps(seedream(gap_filled))
    await store.ingest(answer("seedream", gap_filled, found, json.loads(found)))
    await client.post(callback_path("seedance"), content=dumps(seedance(plain)))

    html = (await client.get("/dashboard")).text
    for concern in ("conflicts", "archive_failed", "gap_filled"):
        link = re.search(rf'data-concern="{concern}"><strong>(\d+)</strong>', html)
        assert link and link.group(1) == "1", concern
    assert "conflict</span>" in html and "archive failing</span>" in html
    assert "via reconciler</span>" in html
    for concern, task_id in (
        ("conflicts", conflicted),
        ("archive_failed", copy_failed),
        ("gap_filled", gap_filled),
    ):
        listed = (await client.get(f"/dashboard?concern={concern}")).text
        shown = [t for t in (conflicted, copy_failed, gap_filled, plain) if t in listed]
        assert shown == [task_id], concern


async def test_discard_needs_the_session_csrf_token_and_removes_the_body(browser, client):
    await sign_in(browser)
    await client.post(callback_path("seedance"), content=b"never json")
    item = (await client.get("/quarantine")).json()["items"][0]
    page = await browser.get("/dashboard/quarantine")
    url = f"/dashboard/quarantine/{item['id']}/discard"
    assert f'action="{url}"' in page.text
    assert (await browser.post(url, data={})).status_code == 403
    assert (await browser.post(url, data={"csrf": "0" * 64})).status_code == 403
    assert (await client.get("/quarantine")).json()["items"]  # still there
    done = await browser.post(url, data={"csrf": csrf_of(page.text)})
    assert done.status_code == 303 and f"discarded={item['id']}" in done.headers["location"]
    assert f"Delivery {item['id']} discarded." in (await browser.get(done.headers["location"])).text
    assert (await client.get("/quarantine")).json()["items"] == []
    again = await browser.post(url, data={"csrf": csrf_of(page.text)})
    assert again.status_code == 404


class ReconcilerWithTimes(FakeReconciler):
    def __init__(self, now: float) -> None:
        self.now = now

    async def status(self):
        return {
            "ok": True,
            "reconciler": "embedded",
            "interval": 30,
            "last_pass_at": "2026-01-01T00:00:00Z",
            "last_pass": {"at": self.now - 300, "duration": 1.5, "checked": 4},
            "providers": {"seedance": {"state": "paused", "paused_until": self.now + 300}},
            "oldest_unfinished_age": 7200.25,
        }


async def test_health_shows_readable_times_not_raw_json(client, app):
    now = time.time()
    await app.state.taskhook.services.start(ReconcilerWithTimes(now))
    html = (await client.get("/dashboard/health")).text
    assert "5 min ago" in html and re.search(r"in [45] min", html)
    assert iso_time(now - 300) in html
    assert "2 h" in html  # oldest unfinished age, in words
    assert str(now - 300) not in html and str(round(now - 300, 3)) not in html
    assert "<pre>" not in html  # no raw JSON dump
