"""The dashboard in headless Chromium against a real server: sign in, filter, open, replay.

Needs Debian's ``chromium`` (``apt-get install -y chromium``) and the ``playwright``
package from PyPI; Playwright drives the system browser (no browser download).
With ``SCREENSHOTS_DIR`` set, the pages are also saved there (README screenshots).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import sqlite3
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .conftest import callback_path
from .harness import API_TOKEN, ROOT, ServerProcess
from .payloads import dreamina, dumps, seedance, seedance2, seedream

CHROMIUM = (
    os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
)

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        CHROMIUM is None, reason="no chromium on PATH; install it: apt-get install -y chromium"
    ),
]


def seed(server: ServerProcess) -> dict[str, str]:
    """A few tasks of every provider, one still running, one quarantined delivery."""
    ids = {
        "seedream": str(uuid.uuid4()),
        "seedance": str(uuid.uuid4()),
        "dreamina": str(uuid.uuid4()),
        "running": str(uuid.uuid4()),
        "pending": str(uuid.uuid4()),
        "replayed": str(uuid.uuid4()),
    }
    bearer = {"Authorization": f"Bearer {API_TOKEN}"}
    with httpx.Client(base_url=server.url, headers=bearer) as http:
        http.post("/tasks", json={"provider": "seedance2", "task_id": ids["pending"]})
        for body, provider in (
            (seedream(ids["seedream"]), "seedream"),
            (seedance(ids["seedance"]), "seedance"),
            (dreamina(ids["dreamina"]), "dreamina"),
            (seedance(ids["running"], "running", video=False), "seedance"),
            (seedance2(status="IN_PROGRESS"), "seedance2"),
        ):
            assert http.post(callback_path(provider), content=dumps(body)).status_code == 200
        http.post(callback_path("seedance"), content=dumps(seedance(ids["running"], "queued")))
        assert http.post(callback_path("seedream"), content=b"<html>oops</html>").status_code == 400
    # A delivery that merges once replayed (as after a parser fix), put in quarantine directly.
    body = dumps(seedance(ids["replayed"]))
    with sqlite3.connect(server.db_path) as db:
        db.execute(
            "INSERT INTO quarantine (provider, received_at, reason, message, headers, sha256, body)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                "seedance",
                time.time(),
                "no_task_id",
                "kept for replay",
                "{}",
                hashlib.sha256(body).hexdigest(),
                body,
            ),
        )
    return ids


@contextlib.contextmanager
def dashboard_browser(tmp_path: Path) -> Iterator[tuple[ServerProcess, dict, Path, Any]]:
    """A seeded server, the folder for screenshots and headless Chromium; all closed after."""
    playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    server = ServerProcess(tmp_path / "taskhook.db", env={"PYTHONPATH": str(ROOT)}).start()
    shots = Path(os.environ.get("SCREENSHOTS_DIR") or tmp_path / "shots")
    shots.mkdir(parents=True, exist_ok=True)
    try:
        ids = seed(server)
        with playwright.sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
            )
            try:
                yield server, ids, shots, browser
            finally:
                browser.close()
    finally:
        server.stop()


def test_sign_in_filter_open_and_replay(tmp_path):
    with dashboard_browser(tmp_path) as (server, ids, shots, browser):
        page = browser.new_page(viewport={"width": 1280, "height": 860})
        page.goto(f"{server.url}/dashboard")
        assert page.url.startswith(f"{server.url}/dashboard/login")

        page.fill("#token", "not the token")
        page.click("button[type=submit]")
        assert page.inner_text("[role=alert]") == "That is not the API token."

        page.fill("#token", API_TOKEN)
        page.click("button[type=submit]")
        page.wait_for_url(f"{server.url}/dashboard")
        assert page.inner_text("h1") == "Tasks"
        page.screenshot(path=str(shots / "dashboard.png"), full_page=True)

        page.select_option("select[name=provider]", "seedream")
        page.click("form.filters button")
        page.wait_for_url("**provider=seedream**")
        rows = page.locator("tbody tr")
        assert rows.count() == 1 and ids["seedream"] in rows.inner_text()

        page.fill("input[name=q]", ids["running"].replace("-", ""))
        page.click("form.filters button")
        page.click(f"text={ids['running']}")
        assert page.inner_text("h1") == ids["running"]
        # running changed the task; the late "queued" is kept but changes nothing.
        assert page.locator(".timeline li.changed").count() == 1
        assert page.locator(".timeline li.same").count() == 1
        assert "next reconciler check" in page.inner_text(".timeline")

        page.goto(f"{server.url}/dashboard/tasks/{ids['seedance']}")
        assert page.locator("figcaption a").get_attribute("href").endswith(".mp4")
        page.screenshot(path=str(shots / "task.png"), full_page=True)

        page.goto(f"{server.url}/dashboard/quarantine")
        assert page.locator("article").count() == 2
        assert "<html>oops</html>" in page.inner_text("article pre >> nth=1")
        page.screenshot(path=str(shots / "quarantine.png"), full_page=True)
        page.click("article >> nth=0 >> button:has-text('Replay')")
        assert "merged into task" in page.inner_text("[role=status]")
        assert page.locator("article").count() == 1
        page.click(f"[role=status] >> text={ids['replayed']}")
        assert page.inner_text("h1") == ids["replayed"]

        phone = browser.new_page(viewport={"width": 390, "height": 844})
        phone.context.add_cookies(page.context.cookies())
        phone.goto(f"{server.url}/dashboard")
        width = phone.evaluate("document.documentElement.scrollWidth")
        assert width <= 390  # nothing overflows the phone's width
        phone.screenshot(path=str(shots / "dashboard-phone.png"), full_page=True)


def test_every_page_fits_a_phone(tmp_path):
    """At 375 px nothing is wider than the screen, and no table hides a column off to the side."""
    with dashboard_browser(tmp_path) as (server, ids, shots, browser):
        long_url = "https://cdn.example/results/" + "x" * 400 + ".mp4?sig=" + "y" * 200
        body = seedance(ids["seedance"].replace("-", "")[:8] + "-long")
        body["data"]["video_url"] = long_url
        with httpx.Client(base_url=server.url) as http:
            assert http.post(callback_path("seedance"), content=dumps(body)).status_code == 200
        long_task = body["task_id"]
        now = time.time()
        with sqlite3.connect(server.db_path) as db:
            db.execute(
                "INSERT INTO archives (task_key, url, status, error, message, attempts,"
                " next_attempt_at, expires_at, created_at, updated_at)"
                " VALUES (?, ?, 'failed', 'download_failed', ?, 5, ?, ?, ?, ?)",
                (
                    long_task.lower().replace("-", ""),
                    long_url,
                    f"GET {long_url} answered 403",
                    now,
                    now + 86400,
                    now,
                    now,
                ),
            )
        pages = {
            "overview": "/dashboard",
            "task": f"/dashboard/tasks/{long_task}",
            "quarantine": "/dashboard/quarantine",
            "health": "/dashboard/health",
            "stuck": "/dashboard/stuck?hours=0",
        }
        phone = browser.new_page(viewport={"width": 375, "height": 812})
        phone.goto(f"{server.url}/dashboard/login")
        phone.fill("#token", API_TOKEN)
        phone.click("button[type=submit]")
        phone.wait_for_url(f"{server.url}/dashboard")
        for name, path in pages.items():
            phone.goto(f"{server.url}{path}")
            width = phone.evaluate("document.documentElement.scrollWidth")
            assert width <= 375, (name, width)
            cut = phone.evaluate(
                "[...document.querySelectorAll('.scroll')]"
                ".filter(e => e.scrollWidth > e.clientWidth + 1).length"
            )
            assert cut == 0, f"{name}: a table is wider than its box"
            phone.screenshot(path=str(shots / f"phone-{name}.png"), full_page=True)
        task_text = phone.goto(f"{server.url}{pages['task']}") and phone.inner_text("main")
        assert "Not archived: GET https://cdn.example/results/" in task_text
        assert "{'code'" not in task_text
        phone.goto(f"{server.url}/dashboard")
        # Every column of the overview is on screen: each row reads as a card.
        for label in ("Provider", "Status", "Created", "Deliveries", "Checks"):
            cell = phone.locator(f"tbody tr >> nth=0 >> td[data-label={label}]")
            box = cell.bounding_box()
            assert box is not None and cell.is_visible(), label
            assert box["x"] >= 0 and box["x"] + box["width"] <= 375, (label, box)
