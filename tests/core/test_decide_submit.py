"""``decide`` for a submit's answer: a pending observation with the submitter's metadata."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from server.core.decide import Incoming, decide
from server.core.types import Observation, Status

from .test_decide import NOW, TASK, items, records

METADATA = st.dictionaries(st.sampled_from(["k", "order"]), st.integers(), max_size=2)


def submitted(metadata: dict, trace_id: str | None = "tr-1") -> Incoming:
    obs = Observation("seedance", TASK, Status.PENDING, trace_id=trace_id)
    return Incoming("seedance", TASK, "submit", b'{"task_id": "x"}', obs, metadata=metadata)


def test_a_submit_creates_a_pending_task_with_its_metadata_and_trace_id() -> None:
    d = decide(None, submitted({"order": 1}), NOW)
    assert d.created and d.keep_body and not d.events
    assert d.record.state.status is Status.PENDING and d.record.state.trace_id == "tr-1"
    assert d.record.metadata == {"order": 1} and d.record.last_source == "submit"
    assert d.record.next_check_at is not None


@given(current=records(), metadata=METADATA, repeat=st.booleans())
def test_a_submit_keeps_the_state_and_lays_its_metadata_over(
    current, metadata: dict, repeat: bool
) -> None:
    d = decide(current, submitted(metadata), NOW, repeat=repeat and current is not None)
    held = current.metadata if current is not None else {}
    assert d.record.metadata == {**held, **metadata}
    if current is not None:
        assert d.record.state.status is current.state.status  # never moved back
        assert d.record.state.results == current.state.results
        assert not d.events
        assert d.write or d.record.metadata == current.metadata


@given(current=records(), item=items())
def test_items_without_metadata_leave_it_as_it_is(current, item) -> None:
    d = decide(current, item, NOW)
    assert d.record.metadata == (current.metadata if current is not None else {})


def test_a_repeated_body_bringing_new_metadata_is_not_a_duplicate() -> None:
    first = decide(None, submitted({}), NOW).record
    again = decide(first, submitted({"k": 2}), NOW, repeat=True)
    assert not again.duplicate and again.write and not again.keep_body
    assert again.record.metadata == {"k": 2} and again.record.deliveries == first.deliveries
    same = decide(again.record, submitted({"k": 2}), NOW, repeat=True)
    assert same.duplicate and not same.write
