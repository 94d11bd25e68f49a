"""Every payload shape found for issue 12, read by the current parser.

``tests/fixtures/shapes/expected.json`` says, for each fixture under
``tests/fixtures/shapes/<provider>/``, what the right reading is: per task
id, the normalised status (None: the payload says nothing), the upstream
status word, the result files with their kind, the error code of a final
failure, and upstream keys that must be kept. ``tests/fixtures/SOURCES.md``
says where each shape comes from.

A callback fixture goes through the callback path (raw bytes -> parse). A
``retrieve``/``retrieve_batch`` fixture is served by ``httpx.MockTransport``
as the upstream's HTTP answer and goes through the reconciler's path (client
-> per-task answer -> parse), so the batch matching and the "not yet"
readings are exercised too.

Readings the current parser gets wrong are marked ``xfail(strict=True)`` in
``KNOWN_WRONG`` with the reason; once the parser reads a shape right, the
strict marker turns the test red until the entry is removed.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

# -- adapter: the only lines that name where the code under test lives -------------
from server import errors  # NoTaskId, UpstreamError
from server import ingest as reading_path  # answer(): poll answer -> observation
from server.providers import parse as parser  # parse_body(): the callback path
from server.providers.acedata import AceDataClient  # the AceData tasks endpoint
from server.providers.seedance2 import Seedance2Client  # the Seedance 2.0 task query

SHAPES = Path(__file__).parent / "fixtures" / "shapes"
EXPECTED: dict[str, Any] = json.loads((SHAPES / "expected.json").read_text())["fixtures"]
ASPECTS = ("status", "upstream_status", "results", "error_code", "upstream")
BASE = "https://api.acedata.test"
S2_BASE = "https://s2.test"
TOKEN = "sk-test-shapes-0123456789"


@dataclass(frozen=True)
class Reading:
    """What the code under test made of one task in one fixture."""

    status: str | None = None
    upstream_status: str | None = None
    results: list[dict[str, str]] = field(default_factory=list)
    error_code: str | None = None
    upstream: Mapping[str, Any] = field(default_factory=dict)
    #: Set when no reading came out at all: an upstream error or a refused body.
    failure: str | None = None


def _reading(observation: Any) -> Reading:
    if observation is None:
        return Reading()
    return Reading(
        status=observation.status.value if observation.status is not None else None,
        upstream_status=observation.upstream_status,
        results=[{"url": r.url, "kind": r.kind} for r in observation.results],
        error_code=observation.error.code if observation.error is not None else None,
        upstream=dict(observation.upstream),
    )


def read_callback(provider: str, body: bytes) -> dict[str, Reading]:
    """A callback body as the callback route reads it; {} when it names no task."""
    try:
        observation = parser.parse_body(provider, body)
    except errors.NoTaskId:
        return {}
    assert observation.task_id is not None
    return {observation.task_id: _reading(observation)}


async def read_poll(
    provider: str, source: str, body: bytes, asked: list[str], http_status: int
) -> dict[str, Reading]:
    """The fixture served as the upstream's answer, read as the reconciler reads it."""

    def handler(request: httpx.Request) -> httpx.Response:
        headers = {"content-type": "application/json"}
        return httpx.Response(http_status, content=body, headers=headers)

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        got: dict[str, Any]
        try:
            if provider == "seedance2":
                gateway = Seedance2Client(S2_BASE, TOKEN, http)
                got = dict(await gateway.retrieve_many(asked))
            else:
                acedata = AceDataClient(provider, BASE, TOKEN, http)
                if source == "retrieve_batch":
                    got = dict(await acedata.retrieve_batch(asked))
                else:
                    got = {task_id: await acedata.retrieve(task_id) for task_id in asked}
        except errors.UpstreamError as exc:
            return {task_id: Reading(failure=f"{type(exc).__name__}: {exc}") for task_id in asked}
    out: dict[str, Reading] = {}
    for task_id in asked:
        answer = got.get(task_id)
        if isinstance(answer, errors.UpstreamError):
            out[task_id] = Reading(failure=f"{type(answer).__name__}: {answer}")
        elif answer is None:
            out[task_id] = _reading(None)
        else:
            incoming = reading_path.answer(provider, task_id, answer.body, answer.payload)
            out[task_id] = _reading(incoming.observation)
    return out


_READINGS: dict[str, dict[str, Reading]] = {}


def readings(path: str) -> dict[str, Reading]:
    """Every task's reading for one fixture (computed once per test process)."""
    if path not in _READINGS:
        spec = EXPECTED[path]
        body = (SHAPES / path).read_bytes()
        if spec["source"] == "callback":
            _READINGS[path] = read_callback(spec["provider"], body)
        else:
            _READINGS[path] = asyncio.run(
                read_poll(
                    spec["provider"],
                    spec["source"],
                    body,
                    spec["asked_ids"],
                    spec.get("http_status", 200),
                )
            )
    return _READINGS[path]


# -- what the current parser gets wrong ---------------------------------------------
# Key: (fixture path, aspect) for every task of the fixture, or (path, aspect, task id).

# Empty: every shape found for issue 12 is read right. A new shape read wrong goes
# here with its reason (``_wrong(path, aspects, reason[, task_id])``) until fixed.
KNOWN_WRONG: dict[tuple[str, ...], str] = {}


def _wrong(path: str, aspects: tuple[str, ...], reason: str, task_id: str | None = None) -> None:
    for aspect in aspects:
        key = (path, aspect) if task_id is None else (path, aspect, task_id)
        KNOWN_WRONG[key] = reason


def _cases() -> Iterator[Any]:
    for path, spec in EXPECTED.items():
        if spec.get("names_no_task"):
            yield pytest.param(path, None, "names_no_task", id=f"{path}::names_no_task")
        for task_id, expected in spec["tasks"].items():
            for aspect in ASPECTS:
                if aspect == "upstream" and "upstream" not in expected:
                    continue
                if aspect == "error_code" and expected["status"] != "failed":
                    continue
                reason = KNOWN_WRONG.get((path, aspect, task_id), KNOWN_WRONG.get((path, aspect)))
                marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
                yield pytest.param(
                    path, task_id, aspect, marks=marks, id=f"{path}::{task_id}::{aspect}"
                )


@pytest.mark.parametrize(("path", "task_id", "aspect"), list(_cases()))
def test_shape_is_read_right(path: str, task_id: str | None, aspect: str) -> None:
    got = readings(path)
    if aspect == "names_no_task":
        assert got == {}, f"{path} must be refused as naming no task, got {got}"
        return
    assert task_id is not None
    expected = EXPECTED[path]["tasks"][task_id]
    assert task_id in got, f"{path}: no reading for {task_id}; read {sorted(got)}"
    reading = got[task_id]
    assert reading.failure is None, f"{path}: {task_id} was not read: {reading.failure}"
    if aspect == "upstream":
        kept = {k: reading.upstream.get(k) for k in expected["upstream"]}
        assert kept == expected["upstream"]
    else:
        assert getattr(reading, aspect) == expected[aspect]


def test_every_fixture_has_an_expected_reading_and_a_source_line() -> None:
    on_disk = {p.relative_to(SHAPES).as_posix() for p in SHAPES.glob("*/*.json")}
    assert on_disk == set(EXPECTED)
    sources = (SHAPES.parent / "SOURCES.md").read_text()
    missing = sorted(p for p in on_disk if f"shapes/{p}" not in sources)
    assert not missing, f"no line in tests/fixtures/SOURCES.md for {missing}"


def test_every_known_wrong_entry_names_a_case() -> None:
    """A stale KNOWN_WRONG key (renamed fixture, task or aspect) would hide nothing."""
    for key in KNOWN_WRONG:
        path, aspect = key[0], key[1]
        assert path in EXPECTED and aspect in ASPECTS, key
        if len(key) == 3:
            assert key[2] in EXPECTED[path]["tasks"], key
