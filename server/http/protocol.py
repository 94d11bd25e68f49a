"""uvicorn's HTTP protocols with deadlines: slow clients are cut off.

uvicorn bounds the idle time between two requests (keep-alive) but not the
time a client takes to send one: a connection that sends a request line and
then a header byte every few seconds (slowloris) holds its socket, and a body
that trickles in holds a request, for as long as the client likes.

The protocols here start a timer whenever a request is awaited and whenever
its body is: a client that has not sent all its headers ``header_timeout``
seconds after the connection opened (or after the previous response), or its
whole body ``body_timeout`` seconds after its headers, is cut off. A request
that never got past its headers is answered ``408`` in the error shape first;
a body that stalls just closes the connection (the application sees the
client disconnect). Cut-offs are counted in ``taskhook_http_refused_total``
and logged at most once a second.

The timers follow the parser's state after every chunk of data and after every
response: one timer per connection, not per byte, and not re-made per request
(it fires when first set and then waits out what is left, if anything).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, Literal

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from server.errors import error_body
from server.http.notice import Notice
from server.observe.metrics import HTTP_REFUSED

log = logging.getLogger("taskhook.http")

Phase = Literal["headers", "body"]

_CUT = Notice(log, "cut off a client slower than %s (%gs): %s")


def _timeout_response(seconds: float) -> bytes:
    message = f"the request headers did not arrive within HEADER_TIMEOUT ({seconds:g}s)"
    body = json.dumps(error_body("request_timeout", message)).encode()
    head = (
        "HTTP/1.1 408 Request Timeout\r\n"
        "content-type: application/json\r\n"
        f"content-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class Deadlines:
    """The timer logic, mixed into a uvicorn protocol; the subclass says which phase it is in."""

    header_timeout: float = 10.0
    body_timeout: float = 30.0

    # Provided by the uvicorn protocol this is mixed into.
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport
    client: tuple[str, int] | None

    _deadline: asyncio.TimerHandle | None = None  # the connection's one timer, when armed
    _timing: Phase | None = None  # the phase being timed
    _due: float = 0.0  # when that phase's time is up (loop time)

    def _phase(self) -> Phase | None:
        """What the connection waits for now: ``headers``, ``body`` or nothing (None)."""
        raise NotImplementedError

    def _follow(self) -> None:
        """Time the phase the parser is in now, from now, if it is not the one being timed.

        The timer is not moved on every request (a cancelled timer stays in the
        loop's heap): it fires when it was set to, and, if the phase began again
        since, sets itself to the new time. It is moved only to fire sooner.
        """
        transport = getattr(self, "transport", None)
        phase = None if transport is None or transport.is_closing() else self._phase()
        if phase == self._timing:
            return
        self._timing = phase
        if phase is None:
            return  # an armed timer finds nothing to time, and stops
        timeout = self.header_timeout if phase == "headers" else self.body_timeout
        self._due = self.loop.time() + timeout
        if self._deadline is not None and self._deadline.when() > self._due:
            self._deadline.cancel()
            self._deadline = None
        if self._deadline is None:
            self._deadline = self.loop.call_at(self._due, self._check)

    def _check(self) -> None:
        self._deadline = None
        phase = self._timing
        if phase is None or self.transport.is_closing():
            return
        if self.loop.time() < self._due:  # the phase began again after the timer was set
            self._deadline = self.loop.call_at(self._due, self._check)
            return
        self._expired(phase)

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline, self._timing = None, None

    def _expired(self, phase: Phase) -> None:
        self._deadline, self._timing = None, None
        if self.transport.is_closing() or self._phase() != phase:
            return
        if phase == "headers":
            reason, setting, seconds = "header_timeout", "HEADER_TIMEOUT", self.header_timeout
            self.transport.write(_timeout_response(seconds))
        else:
            reason, setting, seconds = "body_timeout", "BODY_TIMEOUT", self.body_timeout
        HTTP_REFUSED.labels(reason).inc()
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "unknown client"
        _CUT.say(setting, seconds, client)
        self.transport.close()


class DeadlineH11Protocol(Deadlines, H11Protocol):
    """uvicorn's h11 protocol with header and body deadlines."""

    def _phase(self) -> Phase | None:
        state = self.conn.their_state
        if state is h11.IDLE:
            return "headers"
        if state is h11.SEND_BODY:
            return "body"
        return None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._follow()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._follow()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._follow()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_deadline()
        super().connection_lost(exc)


def _httptools_protocol() -> type[asyncio.Protocol] | None:
    """The same for uvicorn's httptools protocol, when httptools is installed (extra ``fast``)."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:
        return None

    class DeadlineHttpToolsProtocol(Deadlines, HttpToolsProtocol):
        _waiting: Phase | None = "headers"

        def _phase(self) -> Phase | None:
            return self._waiting

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._waiting = "headers"
            self._follow()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            self._follow()

        def on_headers_complete(self) -> None:
            self._waiting = "body"
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            self._waiting = None
            super().on_message_complete()

        def on_response_complete(self) -> None:
            if self._waiting is None:
                self._waiting = "headers"
            super().on_response_complete()
            self._follow()

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel_deadline()
            super().connection_lost(exc)

    return DeadlineHttpToolsProtocol


def protocol_class(header_timeout: float, body_timeout: float) -> type[asyncio.Protocol]:
    """The protocol for uvicorn: httptools when installed (as uvicorn's ``auto``), else h11."""
    base: type[Any] = _httptools_protocol() or DeadlineH11Protocol
    attributes = {"header_timeout": header_timeout, "body_timeout": body_timeout}
    return type(base.__name__, (base,), attributes)
