"""What an endpoint's answer means and when the next attempt is: pure, no I/O.

An event becomes one *message* per subscribed endpoint. Its attempts follow
``DELIVERY_RETRY_SCHEDULE``: ``schedule[0]`` seconds after the event's commit,
then ``schedule[k]`` seconds after the k-th attempt, so a message gets at most
``len(schedule)`` attempts on the schedule and is ``failed`` after the last.

- a 2xx answer delivers it;
- 410 Gone fails it and disables the endpoint;
- anything else (another status, a redirect, a timeout, a refused
  connection, a broken answer) is retried on the schedule.

A redelivery (``POST /events/{id}/redeliver``, ``/recover``) is one more attempt
outside the schedule: it uses no slot of it. If it fails, a message that was
still waiting on its schedule goes back to it (``resume_at``); one that had
finished is failed again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

#: What one attempt's record says.
Outcome = Literal["delivered", "retrying", "failed"]
#: Where a message stands.
MessageStatus = Literal["pending", "delivered", "failed"]
OUTCOMES: tuple[Outcome, ...] = ("delivered", "retrying", "failed")

GONE = 410


@dataclass(frozen=True)
class Answer:
    """How one attempt ended: the HTTP status, or why there was none."""

    status: int | None
    error: str | None = None

    @property
    def delivered(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def gone(self) -> bool:
        return self.status == GONE


@dataclass(frozen=True)
class Next:
    """What the message becomes after one attempt."""

    outcome: Outcome
    status: MessageStatus
    #: When the next attempt is due (None unless ``status`` is pending).
    next_attempt_at: float | None
    #: Scheduled attempts made, this one included if it was on the schedule.
    scheduled: int
    #: Disable the endpoint, for this reason (410 Gone).
    disable: str | None = None


def first_attempt_at(committed_at: float, schedule: Sequence[float]) -> float:
    """When a message's first attempt is due."""
    return committed_at + schedule[0]


def after_attempt(
    answer: Answer,
    *,
    schedule: Sequence[float],
    scheduled: int,
    manual: bool,
    resume_at: float | None,
    now: float,
) -> Next:
    """The message after an attempt that got ``answer``.

    ``scheduled``: scheduled attempts made before this one; ``manual``: this
    attempt was a redelivery; ``resume_at``: for a redelivery of a message
    still on its schedule, when its next scheduled attempt was due.
    """
    if answer.delivered:
        return Next("delivered", "delivered", None, scheduled + int(not manual))
    if answer.gone:
        return Next(
            "failed",
            "failed",
            None,
            scheduled + int(not manual),
            disable="the endpoint answered 410 Gone",
        )
    if manual:
        if resume_at is not None:
            return Next("retrying", "pending", resume_at, scheduled)
        return Next("failed", "failed", None, scheduled)
    made = scheduled + 1
    if made < len(schedule):
        return Next("retrying", "pending", now + schedule[made], made)
    return Next("failed", "failed", None, made)


#: What a lost attempt's record says (its holder stopped before recording an outcome).
LOST_ATTEMPT = "no outcome: the process sending it stopped before recording one (its claim lapsed)"


def disable_reason(failing_since: float, now: float, disable_after: float) -> str | None:
    """Why an endpoint failing since ``failing_since`` is disabled now, or None (every backend
    records this reason)."""
    if not should_disable(failing_since, now, disable_after):
        return None
    return (
        f"every attempt failed for {_span(now - failing_since)}"
        f" (DELIVERY_DISABLE_AFTER={disable_after:g})"
    )


def _span(seconds: float) -> str:
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.1f} s"


def should_disable(failing_since: float, now: float, disable_after: float) -> bool:
    """An endpoint whose every attempt failed since ``failing_since`` is disabled after
    ``disable_after`` seconds of it (0: never)."""
    return disable_after > 0 and now - failing_since >= disable_after
