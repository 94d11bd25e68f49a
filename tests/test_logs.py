"""Logs: structured fields, one JSON object per line, no secret anywhere."""

from __future__ import annotations

import json
import logging
import uuid

import httpx
import pytest

from server.core.tokens import callback_token
from server.observe import logs

from .conftest import callback_path
from .harness import API_TOKEN, CALLBACK_SECRET, ROOT, ServerProcess
from .payloads import dumps, seedance

SECRETS = (
    API_TOKEN,
    CALLBACK_SECRET,
    *(
        callback_token(CALLBACK_SECRET, p)
        for p in ("seedance", "seedream", "dreamina", "seedance2")
    ),
)


def record(name: str, msg: str, *args, **extra) -> logging.LogRecord:
    rec = logging.getLogger(name).makeRecord(name, logging.INFO, "f.py", 1, msg, args, None)
    for key, value in extra.items():
        setattr(rec, key, value)
    return rec


def test_event_fields_become_json_keys():
    rec = record("taskhook.x", "archived provider=%s task_id=%s", "seedance", "t-1", bytes=42)
    line = json.loads(logs.JSONFormatter().format(rec))
    assert line["event"] == "archived"
    assert line["provider"] == "seedance" and line["task_id"] == "t-1"
    assert line["bytes"] == 42 and line["level"] == "info" and line["logger"] == "taskhook.x"
    assert line["message"] == "archived provider=seedance task_id=t-1"


def test_event_helper_logs_text_and_fields(caplog):
    caplog.set_level(logging.INFO, logger="taskhook")
    logs.event(logging.getLogger("taskhook.test"), "gap_filled", provider="seedream", task_id="a")
    (rec,) = caplog.records
    assert rec.getMessage() == "gap_filled provider=seedream task_id=a"
    assert (rec.event, rec.provider, rec.task_id) == ("gap_filled", "seedream", "a")
    assert json.loads(logs.JSONFormatter().format(rec))["event"] == "gap_filled"


def test_access_line_is_structured_and_redacted():
    token = callback_token(CALLBACK_SECRET, "seedance")
    logs.configure("text")  # installs the redacting record factory
    rec = record(
        "uvicorn.access",
        '%s - "%s %s HTTP/%s" %d',
        "127.0.0.1:5000",
        "POST",
        f"/callbacks/seedance/{token}",
        "1.1",
        200,
    )
    line = json.loads(logs.JSONFormatter().format(rec))
    assert line["event"] == "http_request" and line["provider"] == "seedance"
    assert line["path"] == "/callbacks/seedance/[redacted]" and line["status"] == 200
    assert token not in json.dumps(line)
    assert token not in logs.TextFormatter().format(rec)


def test_text_lines_stay_readable_and_carry_fields():
    rec = record("taskhook.x", "copy failed", provider="seedance", task_id="t-9")
    line = logs.TextFormatter().format(rec)
    assert line.endswith("INFO taskhook.x: copy failed provider=seedance task_id=t-9")


def test_exception_text_is_redacted_too():
    token = callback_token(CALLBACK_SECRET, "seedream")
    try:
        raise ValueError(f"bad url http://x/callbacks/seedream/{token}")
    except ValueError:
        rec = logging.getLogger("taskhook.x").makeRecord(
            "taskhook.x", logging.ERROR, "f.py", 1, "boom", (), __import__("sys").exc_info()
        )
    assert token not in logs.JSONFormatter().format(rec)
    assert token not in logs.TextFormatter().format(rec)


async def test_no_secret_in_captured_logs_of_route_tests(client, caplog):
    caplog.set_level(logging.DEBUG)
    body = seedance()
    await client.post(callback_path("seedance"), content=dumps(body))
    await client.post(callback_path("seedance"), content=dumps(body))
    await client.post(callback_path("seedream"), content=b"{not json")
    await client.post(callback_path("dreamina"), content=b"{}")
    await client.post("/callbacks/seedance/guessing", content=b"{}")
    await client.get(f"/tasks/{body['task_id']}")
    await client.post("/dashboard/login", data={"token": API_TOKEN})
    await client.post("/dashboard/login", data={"token": "wrong"})
    # A careless line that prints a whole callback URL is redacted where it is made.
    logging.getLogger("taskhook.test").info("made url %s", "http://h" + callback_path("seedance"))
    assert any(getattr(r, "provider", None) == "seedance" for r in caplog.records) or any(
        "provider=seedance" in r.getMessage() for r in caplog.records
    )
    text = "\n".join(r.getMessage() for r in caplog.records) + caplog.text
    for secret in SECRETS:
        assert secret not in text


@pytest.mark.e2e
def test_json_logs_of_a_real_server_are_json_and_secret_free(tmp_path):
    # PYTHONPATH: the harness starts the child outside the checkout.
    env = {"LOG_FORMAT": "json", "PYTHONPATH": str(ROOT)}
    server = ServerProcess(tmp_path / "taskhook.db", env=env).start()
    try:
        task_id = str(uuid.uuid4())
        with httpx.Client(base_url=server.url) as http:
            answer = http.post(callback_path("seedance"), content=dumps(seedance(task_id)))
            assert answer.status_code == 200
            assert http.post("/callbacks/seedance/wrong-token", content=b"{}").status_code == 401
            bearer = {"Authorization": f"Bearer {API_TOKEN}"}
            assert http.get(f"/tasks/{task_id}", headers=bearer).status_code == 200
            http.post("/dashboard/login", data={"token": API_TOKEN})
    finally:
        assert server.stop() is not None
    lines = [line for line in server.logs().splitlines() if line.strip()]
    entries = [json.loads(line) for line in lines]  # raises on any line that is not JSON
    assert all(isinstance(e, dict) and "event" in e and "message" in e for e in entries)
    for secret in SECRETS:
        assert not any(secret in line for line in lines), secret
    access = [e for e in entries if e["event"] == "http_request"]
    callbacks = [e for e in access if e["path"].startswith("/callbacks/seedance/[redacted]")]
    # The refused callback has its access line; the accepted one has its callback line
    # instead (one line per callback: provider, task, outcome and client).
    assert [(e["provider"], e["status"]) for e in callbacks] == [("seedance", 401)]
    line = next(e for e in entries if e.get("task_id") == task_id and e["event"] == "callback")
    assert line["logger"] == "taskhook.callbacks" and line["provider"] == "seedance"
    assert line["client"].startswith("127.0.0.1:") and line["changed"] is True
    assert any(e["logger"] == "uvicorn.error" and e["event"] == "server" for e in entries)
    assert not any("color_message" in e for e in entries)


# -- redaction of near-miss paths (issue 10, item 11) ----------------------------------

TOKEN = callback_token(CALLBACK_SECRET, "seedance")


@pytest.mark.parametrize(
    "path",
    [
        f"/callbacks//seedance/{TOKEN}",
        f"/CALLBACKS/SEEDANCE/{TOKEN}",
        f"/callbacks/seedance/x/{TOKEN}",
        f"/callbacks/seed%2Fance/{TOKEN}",
        f"/callbacks/seed/ance/{TOKEN}",
        f"/callbacks/seedance/{TOKEN.upper()}",
        f"/callbacks/seedance/{TOKEN[:-3]}",
        f"/callbacks/seedance?t={TOKEN}",
        f"/api/v1/callbacks/seedance/{TOKEN}",
        f"/anything/{TOKEN}/else",
        f"/tasks?cursor={TOKEN}&limit=5",
        f"/%63allbacks/seedance/{TOKEN}",
    ],
)
def test_every_token_shaped_segment_of_any_path_is_redacted(path):
    logs.configure("text")
    rec = record("uvicorn.access", '%s - "%s %s HTTP/%s" %d', "1.2.3.4:5", "POST", path, "1.1", 404)
    for line in (logs.JSONFormatter().format(rec), logs.TextFormatter().format(rec)):
        assert TOKEN not in line and TOKEN.upper() not in line and TOKEN[:-3] not in line, line
        assert "[redacted]" in line


def test_readable_ids_in_paths_stay_readable():
    for path in (
        "/tasks/84d1544a-9043-4dde-a98b-e889dacd75f6",
        "/tasks/362b4fed67bd11f1ad1100163e57d510/deliveries",
        "/tasks/cgt-20251221230356-sxgt7",
        "/dashboard/quarantine?cursor=12345678901234567",
        "/callbacks/seedance",
    ):
        assert logs.redact_path(path) == path


def test_known_secrets_are_redacted_anywhere_in_any_spelling():
    logs.hide(["a-long-api-token-value", "short"])
    text = "x a-long-api-token-value y A-LONG-API-TOKEN-VALUE z short"
    assert logs.redact(text) == "x [redacted] y [redacted] z short"  # short ones are left


def test_passwords_in_urls_are_redacted():
    line = logs.redact("could not connect to postgresql://taskhook:s3cret-pw@db:5432/x")
    assert "s3cret-pw" not in line and "postgresql://taskhook:[redacted]@db:5432/x" in line


async def test_the_app_hides_its_secrets_from_every_log_line(client, caplog):
    caplog.set_level(logging.INFO)
    logging.getLogger("taskhook.test").info("careless %s and %s", API_TOKEN, TOKEN)
    assert API_TOKEN not in caplog.text and TOKEN not in caplog.text
