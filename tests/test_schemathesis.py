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
def server(tmp_path_factory):
    process = ServerProcess(tmp_path_factory.mktemp("schemathesis") / "taskhook.db").start()
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
