"""Characters that ``str.isdigit`` accepts but ``int`` refuses (``²``) never reach ``int``.

A result URL is signed by upstream's CDN, but its query is whatever the body
says: a callback whose result URL carries ``X-Tos-Expires=²`` must be kept and
merged like any other, not crash the ingest.
"""

from __future__ import annotations

import dataclasses
import json

from server.core.expiry import url_expiry
from server.observe.logs import _scalar

from .conftest import callback_path, serve_app
from .harness import API_TOKEN


def test_url_expiry_ignores_a_superscript_validity():
    assert url_expiry("https://cdn.test/v.mp4?X-Tos-Expires=%C2%B2", 1000.0) == 1000.0 + 86400
    assert url_expiry("https://cdn.test/v.mp4?Expires=%C2%B2", 1000.0) == 1000.0 + 86400


def test_a_superscript_in_a_log_value_stays_text():
    assert _scalar("²") == "²"
    assert _scalar("42") == 42


async def test_a_callback_whose_result_url_has_a_superscript_expiry_is_merged(settings):
    body = {
        "success": True,
        "task_id": "3f1c9c1e-1111-4a4a-9b9b-000000000001",
        "data": {
            "task_id": "3f1c9c1e-1111-4a4a-9b9b-000000000001",
            "status": "succeeded",
            "video_url": "https://cdn.test/v.mp4?X-Tos-Expires=%C2%B2",
        },
    }
    archiving = dataclasses.replace(settings, archive=True)  # the archive row reads the expiry
    async with serve_app(archiving, authorization=f"Bearer {API_TOKEN}") as client:
        answer = await client.post(callback_path("seedance"), content=json.dumps(body))
        assert answer.status_code == 200, answer.text
        assert answer.json()["status"] == "succeeded"
