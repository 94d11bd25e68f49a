"""What an answer means and when the next attempt is (server.core.delivery_schedule)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.core.delivery_schedule import Answer, after_attempt, first_attempt_at, should_disable
from server.errors import ConfigError
from server.settings import Settings, retry_schedule

SCHEDULE = (0.0, 5.0, 300.0)


def attempt(answer: Answer, scheduled: int, *, manual: bool = False, resume_at=None):
    return after_attempt(
        answer, schedule=SCHEDULE, scheduled=scheduled, manual=manual, resume_at=resume_at, now=1000
    )


@pytest.mark.parametrize("status", [200, 201, 204, 299])
def test_a_2xx_delivers(status):
    nxt = attempt(Answer(status), 0)
    assert (nxt.outcome, nxt.status, nxt.next_attempt_at, nxt.disable) == (
        "delivered",
        "delivered",
        None,
        None,
    )


@pytest.mark.parametrize(
    "answer", [Answer(500), Answer(404), Answer(301), Answer(199), Answer(None, "timeout")]
)
def test_anything_else_is_retried_after_the_next_delay_of_the_schedule(answer):
    first = attempt(answer, 0)
    assert (first.outcome, first.status, first.next_attempt_at, first.scheduled) == (
        "retrying",
        "pending",
        1005,
        1,
    )
    second = attempt(answer, 1)
    assert (second.status, second.next_attempt_at, second.scheduled) == ("pending", 1300, 2)


def test_after_as_many_attempts_as_the_schedule_has_numbers_it_fails():
    nxt = attempt(Answer(503), len(SCHEDULE) - 1)
    assert (nxt.outcome, nxt.status, nxt.next_attempt_at, nxt.scheduled) == (
        "failed",
        "failed",
        None,
        3,
    )


def test_410_fails_and_disables_the_endpoint():
    nxt = attempt(Answer(410), 0)
    assert (nxt.outcome, nxt.status) == ("failed", "failed")
    assert nxt.disable and "410" in nxt.disable


def test_a_redelivery_uses_no_slot_of_the_schedule():
    delivered = attempt(Answer(200), 3, manual=True)
    assert (delivered.status, delivered.scheduled) == ("delivered", 3)
    finished = attempt(Answer(500), 3, manual=True)
    assert (finished.outcome, finished.status, finished.scheduled) == ("failed", "failed", 3)


def test_a_failed_redelivery_of_a_waiting_message_goes_back_to_its_schedule():
    nxt = attempt(Answer(500), 1, manual=True, resume_at=1234.0)
    assert (nxt.outcome, nxt.status, nxt.next_attempt_at, nxt.scheduled) == (
        "retrying",
        "pending",
        1234.0,
        1,
    )


def test_the_first_attempt_is_due_the_first_delay_after_the_commit():
    assert first_attempt_at(100.0, (2.5, 10.0)) == 102.5


@given(st.lists(st.floats(0, 1e6), min_size=1, max_size=20))
def test_a_message_that_always_fails_gets_exactly_as_many_attempts_as_numbers(delays):
    scheduled, attempts, now = 0, 0, 0.0
    while True:
        nxt = after_attempt(
            Answer(500), schedule=delays, scheduled=scheduled, manual=False, resume_at=None, now=now
        )
        attempts += 1
        scheduled = nxt.scheduled
        if nxt.status != "pending":
            break
        assert nxt.next_attempt_at == now + delays[attempts]
        now = nxt.next_attempt_at
    assert attempts == len(delays)
    assert nxt.outcome == "failed"


def test_disable_after_counts_from_the_first_failure_and_zero_never_disables():
    assert not should_disable(100.0, 199.0, 100.0)
    assert should_disable(100.0, 200.0, 100.0)
    assert not should_disable(0.0, 1e9, 0.0)


def test_the_schedule_setting_is_parsed_and_checked():
    assert retry_schedule("0, 0.2,5") == (0.0, 0.2, 5.0)
    assert Settings(delivery_retry_schedule="1,2").retry_schedule == (1.0, 2.0)
    for bad in ("", "1,,2", "-1", "soon", "nan", ",".join(["1"] * 101)):
        with pytest.raises(ConfigError) as caught:
            Settings.from_env({"DELIVERY_RETRY_SCHEDULE": bad or " ,"}, dotenv=None)
        assert "DELIVERY_RETRY_SCHEDULE" in str(caught.value)
