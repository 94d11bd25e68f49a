"""The reconciler's log lines as JSON: every value is its own, no punctuation glued to it.

A pass meets every kind of trouble (a rejected token, a rate limit, a 5xx, an
answer that is not JSON, an answer naming another task) and fills gaps and
expires tasks; each record it logs is formatted as the JSON line
``LOG_FORMAT=json`` writes, parsed back, and its fields checked.
"""

from __future__ import annotations

import json
import logging
import re
import time
from typing import Any

import httpx
import pytest

from server.observe.logs import JSONFormatter
from server.providers import NAMES
from server.providers.acedata import AceDataClient
from server.reconcile.health import HealthBoard
from server.reconcile.reconciler import run_pass
from server.store import open_store

from .test_reconciler import ACE, TOKEN, make_settings, register, seedance_item

#: What a value must not end with: it would be punctuation of the sentence, glued on.
GLUED = re.compile(r"[;:,.!?)\]]$")
#: ``key=value`` as the JSON formatter lifts pairs out of a message.
PAIR = re.compile(r"(?<![\w.])([a-z_][a-z0-9_]*)=(\S+)")
#: Fields that hold free text (upstream's words) rather than one value.
FREE_TEXT = {"message", "exception", "reason", "time"}


def answers(kind: str, ids: list[str]) -> httpx.Response:
    if kind == "401":
        return httpx.Response(401, json={"error": {"code": "invalid_token", "message": "bad"}})
    if kind == "429":
        return httpx.Response(429, headers={"Retry-After": "7"}, json={})
    if kind == "500":
        return httpx.Response(500, json={"error": {"code": "oops", "message": "down, sorry."}})
    if kind == "html":
        return httpx.Response(200, text="<html>502 Bad Gateway</html>")
    items = [seedance_item(i) for i in ids]
    if kind == "expire":
        items = []  # nothing yet, and the tasks are past RECONCILE_MAX_AGE
    if kind == "other":  # matched by its task_id, but its response names another task
        items = [{"task_id": ids[0], "response": seedance_item("someone-else")["response"]}]
    if kind == "unreadable":  # matched, but nothing in it names a task
        items = [{"task_id": ids[0], "response": {"success": True, "data": {}}}]
    return httpx.Response(200, json={"items": items, "count": len(items)})


@pytest.fixture
def json_lines(caplog):
    def lines() -> list[dict[str, Any]]:
        formatter = JSONFormatter()
        return [
            json.loads(formatter.format(r)) for r in caplog.records if r.name.startswith("taskhook")
        ]

    caplog.set_level(logging.INFO, logger="taskhook")
    return lines


KINDS = {
    "401": "token_rejected",
    "429": "rate_limited",
    "500": "upstream_trouble",
    "html": "upstream_trouble",
    "ok": "gap_filled",
    "expire": "task_expired",
    "other": "answer_names_another_task",
    "unreadable": "unreadable_answer",
}


@pytest.mark.parametrize("kind", list(KINDS))
async def test_every_reconciler_line_parses_with_clean_values(tmp_path, json_lines, kind):
    async def handler(request: httpx.Request) -> httpx.Response:
        return answers(kind, json.loads(request.content)["ids"])

    settings = make_settings(tmp_path)
    async with (
        open_store(settings) as store,
        httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http,
    ):
        await register(store, "seedance", 3)
        clients = {"seedance": AceDataClient("seedance", ACE, TOKEN, http)}
        late = time.time() + settings.reconcile_max_age + 5  # old enough to expire
        now = late if kind == "expire" else time.time() + 1
        await run_pass(store, clients, settings, now=now, health=HealthBoard())
    lines = json_lines()
    assert lines, "the pass logged nothing to check"
    for line in lines:
        if "provider" in line:
            assert line["provider"] in NAMES, line
        for key, value in line.items():
            if key not in FREE_TEXT and isinstance(value, str):
                assert not GLUED.search(value), (key, line)
        message = line["message"].split(" reason=")[0]  # the free text comes last
        for key, value in PAIR.findall(message):
            assert not GLUED.search(value), (key, value, line)
    assert KINDS[kind] in {line["event"] for line in lines}
