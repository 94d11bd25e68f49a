"""The deadline timer of a connection, driven step by step on a clock of our own.

The end-to-end proof (slow clients really cut off) is in test_overload.py;
here the timer's bookkeeping: one timer per connection, re-set only when a
phase must end sooner, and a phase that began again is timed from its start.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from server.http.protocol import Deadlines, Phase


class Handle:
    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self._when, self.callback, self.cancelled = when, callback, False

    def when(self) -> float:
        return self._when

    def cancel(self) -> None:
        self.cancelled = True


class Clock:
    """``time``, ``call_at`` and running what is due, as an event loop would."""

    def __init__(self) -> None:
        self.now = 0.0
        self.handles: list[Handle] = []

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[[], None]) -> Handle:
        handle = Handle(when, callback)
        self.handles.append(handle)
        return handle

    def armed(self) -> list[float]:
        return sorted(h.when() for h in self.handles if not h.cancelled)

    def advance(self, to: float) -> None:
        while due := [h for h in self.handles if not h.cancelled and h.when() <= to]:
            handle = min(due, key=Handle.when)
            self.handles.remove(handle)
            self.now = handle.when()
            handle.callback()
        self.now = to


class Transport:
    def __init__(self) -> None:
        self.closed = False
        self.written = b""

    def is_closing(self) -> bool:
        return self.closed

    def write(self, data: bytes) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True


class Connection(Deadlines):
    header_timeout, body_timeout = 10.0, 30.0

    def __init__(self) -> None:
        self.loop: Any = Clock()
        self.transport: Any = Transport()
        self.client = ("127.0.0.1", 5555)
        self.waiting: Phase | None = "headers"

    def _phase(self) -> Phase | None:
        return self.waiting

    def step(self, at: float, phase: Phase | None) -> None:
        self.loop.advance(at)
        self.waiting = phase
        self._follow()


def test_requests_answered_in_time_reuse_one_timer_and_are_never_cut() -> None:
    conn = Connection()
    conn.step(0, "headers")
    for second in range(1, 40):  # a request a second, each one read and answered at once
        conn.step(second - 0.5, None)
        conn.step(second, "headers")
    conn.loop.advance(45)
    assert not conn.transport.closed
    # One timer at a time, made again only when it fired: ~one every 10 s, not per request.
    assert len(conn.loop.armed()) == 1 and len(conn.loop.handles) == 1


def test_the_header_phase_is_timed_from_the_last_response() -> None:
    conn = Connection()
    conn.step(0, "headers")
    conn.step(1, None)
    conn.step(8, "headers")  # answered at 8: the next request's headers are due at 18
    conn.loop.advance(17.9)
    assert not conn.transport.closed
    conn.loop.advance(18)
    assert conn.transport.closed and conn.transport.written.startswith(b"HTTP/1.1 408 ")


def test_a_later_phase_that_must_end_sooner_moves_the_timer() -> None:
    conn = Connection()
    conn.step(0, "headers")
    conn.step(1, "body")  # body due at 31; the timer set for the headers fires at 10 first
    conn.loop.advance(10)
    assert conn.loop.armed() == [31]
    conn.step(12, None)
    conn.step(13, "headers")  # due at 23, sooner than the armed 31
    assert conn.loop.armed() == [23]
    conn.loop.advance(23)
    assert conn.transport.closed


def test_a_stalled_body_is_cut_off_without_an_answer() -> None:
    conn = Connection()
    conn.step(0, "headers")
    conn.step(2, "body")
    conn.loop.advance(31.9)
    assert not conn.transport.closed
    conn.loop.advance(32)
    assert conn.transport.closed and conn.transport.written == b""


def test_no_timer_while_the_application_answers() -> None:
    conn = Connection()
    conn.step(0, "headers")
    conn.step(1, None)  # the request is in; the application takes its time
    conn.loop.advance(500)
    assert not conn.transport.closed and conn.loop.armed() == []
