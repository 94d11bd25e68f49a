"""Rendering times and event bodies: the memo of the last time never shows a stale text."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.core.render import event_text, retyped
from server.core.types import iso_time

times = st.floats(min_value=0, max_value=4_102_444_800, allow_nan=False)  # 1970 to 2100


def plain(ts: float) -> str:
    text = datetime.fromtimestamp(ts, tz=UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z").replace(".000Z", "Z")


@given(st.lists(times, min_size=1, max_size=6))
def test_iso_time_renders_every_time_as_itself_whatever_came_before(moments: list[float]) -> None:
    for ts in [*moments, *reversed(moments), moments[0], moments[0]]:
        assert iso_time(ts) == plain(ts)


def test_iso_time_of_no_time_is_none_and_forgets_nothing() -> None:
    assert iso_time(1_780_000_000.5) == "2026-05-28T20:26:40.500Z"
    assert iso_time(None) is None
    assert iso_time(1_780_000_000.5) == "2026-05-28T20:26:40.500Z"
    assert iso_time(1_780_000_000) == "2026-05-28T20:26:40Z"


@given(st.sampled_from(["task.succeeded", "task.failed", 'odd "type"']), times)
def test_event_text_is_the_event_as_json(event_type: str, ts: float) -> None:
    data = '{"task_id":"t-1","status":"succeeded"}'
    body = json.loads(event_text(event_type, ts, data))
    assert body == {"type": event_type, "timestamp": plain(ts), "data": json.loads(data)}


@given(st.sampled_from(["task.status_changed", "task.failed"]), times)
def test_retyped_is_the_same_change_as_another_type(source_type: str, ts: float) -> None:
    data = '{"task_id":"t-1","note":"\\"type\\":\\"x\\""}'
    body = event_text(source_type, ts, data)
    assert retyped(body, source_type, "task.succeeded") == event_text("task.succeeded", ts, data)


def test_retyped_refuses_a_body_of_another_type() -> None:
    body = event_text("task.failed", 0, "{}")
    with pytest.raises(ValueError, match="does not begin"):
        retyped(body, "task.succeeded", "task.status_changed")
