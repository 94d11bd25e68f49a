"""TaskState <-> JSON-safe dict."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.core.codec import CodecError, state_from_dict, state_to_dict
from server.core.merge import merge
from server.core.types import Conflict, ErrorInfo, Result, Status, TaskState
from server.providers.parse import parse_payload

from .fixtures import load

JSON_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=10,
)
JSON_OBJECTS = st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=4)
TEXT = st.text(max_size=12)
RESULTS = st.lists(
    st.builds(Result, TEXT, st.sampled_from(["image", "video"]), JSON_OBJECTS), max_size=3
).map(tuple)
ERRORS = st.none() | st.builds(ErrorInfo, st.none() | TEXT, TEXT)
STATES = st.builds(
    TaskState,
    task_id=TEXT,
    provider=TEXT,
    status=st.sampled_from(Status),
    upstream_status=st.none() | TEXT,
    trace_id=st.none() | TEXT,
    results=RESULTS,
    error=ERRORS,
    conflicts=st.lists(
        st.builds(Conflict, st.sampled_from(Status), st.none() | TEXT, ERRORS, RESULTS),
        max_size=2,
    ).map(tuple),
    upstream=JSON_OBJECTS,
)


@settings(max_examples=300)
@given(STATES)
def test_every_state_round_trips_through_json(state: TaskState) -> None:
    stored = json.dumps(state_to_dict(state), allow_nan=False)
    assert state_from_dict(json.loads(stored)) == state


def test_a_merged_seed_state_round_trips_with_its_shape() -> None:
    state = TaskState("9462ca25-468b-45a5-9e75-6f516dedcc80", "seedance")
    for fixture in ("seedance_running", "seedance_retrieve", "seedance_failed"):
        state = merge(state, parse_payload("seedance", load(fixture)))
    data = state_to_dict(state)
    assert data["status"] == "succeeded"
    assert data["results"][0]["extra"] == {"model": "doubao-seedance-1-0-pro-250528"}
    assert data["conflicts"][0]["status"] == "failed"
    assert data["conflicts"][0]["error"]["code"] == "OutputVideoSensitiveContentDetected"
    assert state_from_dict(json.loads(json.dumps(data))) == state


def test_extra_keys_named_url_or_kind_cannot_clobber_the_result() -> None:
    state = TaskState("t", "seedream", results=(Result("u", "image", {"url": "x", "kind": 1}),))
    assert state_from_dict(state_to_dict(state)).results == state.results


def test_missing_optional_fields_take_their_defaults() -> None:
    assert state_from_dict({"task_id": "t", "provider": "seedance"}) == TaskState("t", "seedance")


@pytest.mark.parametrize(
    ("data", "names"),
    [
        ([], "state"),
        ({"provider": "seedance"}, "task_id"),
        ({"task_id": "t", "provider": "seedance", "status": "done"}, "status"),
        ({"task_id": "t", "provider": "p", "results": {}}, "results"),
        ({"task_id": "t", "provider": "p", "results": [{"url": "u", "kind": "gif"}]}, "kind"),
        ({"task_id": "t", "provider": "p", "results": [{"kind": "image"}]}, r"results\[0\].url"),
        ({"task_id": "t", "provider": "p", "error": {"code": None}}, "error.message"),
        ({"task_id": "t", "provider": "p", "conflicts": [{"status": "x"}]}, r"conflicts\[0\]"),
        ({"task_id": "t", "provider": "p", "upstream": []}, "upstream"),
    ],
)
def test_a_malformed_stored_state_names_the_bad_field(data: Any, names: str) -> None:
    with pytest.raises(CodecError, match=names):
        state_from_dict(data)
