"""Schemathesis against the real server's own ``/openapi.json``: no 5xx, answers as documented.

Every operation the schema lists is called with generated path, query and
body values, with the API bearer; each answer must not be a server error, its
status must be one the schema documents for that operation, and its content
type and body must match what the schema says (errors: the one error shape).
"""

from __future__ import annotations

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from server.web.openapi import build_schema
from server.web.routes import ROUTES

from .harness import API_TOKEN, ServerProcess

pytestmark = pytest.mark.e2e

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def server(tmp_path_factory, new_database):
    folder = tmp_path_factory.mktemp("schemathesis")
    process = ServerProcess(folder / "taskhook.db", database_url=new_database(folder)).start()
    yield process
    process.stop()


# Loaded at import from the same builder the server answers /openapi.json with
# (schemathesis' from_fixture does not work under pytest 9); the first test
# checks that the served document is this one.
DOCUMENT = build_schema(ROUTES)
schema = schemathesis.openapi.from_dict(DOCUMENT)


def test_served_schema_is_the_one_tested(server):
    assert httpx.get(f"{server.url}/openapi.json", timeout=10).json() == DOCUMENT


@schema.parametrize()
@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_every_operation_answers_as_documented(case, server):
    case.call_and_validate(
        base_url=server.url,
        headers={"Authorization": f"Bearer {API_TOKEN}"},
        checks=CHECKS,
        timeout=10,
    )


#: Issue 10's parameter cases, against the real server (uvicorn decodes paths itself).
#: (method, path, expected status)
HOSTILE_PARAMETERS = [
    ("GET", "/tasks?limit=%C2%B2", 400),
    ("GET", "/tasks?limit=" + "9" * 40, 400),
    ("GET", "/tasks?cursor=OTk5OTk5OTk5OTk5OTk5OTk5OTk5OTk5OTk5", 400),
    ("GET", "/tasks?status=bogus", 400),
    ("GET", "/quarantine?cursor=" + "9" * 30, 400),
    ("GET", "/quarantine?limit=%D9%A1", 400),
    ("POST", "/quarantine/" + "9" * 30 + "/replay", 404),
    ("POST", "/quarantine/%C2%B2/replay", 404),
    ("DELETE", "/quarantine/" + "9" * 30, 404),
    ("GET", "/dashboard?cursor=" + "9" * 30, 400),
    ("GET", "/dashboard/quarantine?failed=" + "9" * 30, 400),
    ("GET", "/dashboard/stuck?hours=abc", 400),
    ("GET", "/tasks/no%2Fsuch", 404),
    ("GET", "/tasks/%FF%FE", 404),
]


@pytest.mark.parametrize("method, path, status", HOSTILE_PARAMETERS)
def test_hostile_parameters_answer_4xx_on_the_real_server(server, method, path, status):
    answer = httpx.request(
        method, f"{server.url}{path}", headers={"Authorization": f"Bearer {API_TOKEN}"}
    )
    assert answer.status_code == status, answer.text


def test_a_task_id_with_a_slash_reads_through_the_real_server(server):
    bearer = {"Authorization": f"Bearer {API_TOKEN}"}
    with httpx.Client(base_url=server.url, headers=bearer) as http:
        task = {"provider": "seedance", "task_id": "team/42/render"}
        assert http.post("/tasks", json=task).status_code == 201
        assert http.get("/tasks/team%2F42%2Frender").json()["task_id"] == "team/42/render"
        kept = http.get("/tasks/team%2F42%2Frender/deliveries").json()
        assert kept == {"task_id": "team/42/render", "deliveries": []}
        assert http.get("/dashboard/tasks/team%2F42%2Frender").status_code == 200
