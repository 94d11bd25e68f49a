"""A bound on requests served at once: past it, 503 ``overloaded`` at once, never a queue.

uvicorn's own ``limit_concurrency`` answers in plain text; this ASGI middleware
counts the HTTP requests inside the application and answers the ones over the
limit itself, in the error shape, with ``Retry-After``, without reading their
body. ``/healthz`` is never refused: a platform that cannot reach it would kill
a process that is only busy.
"""

from __future__ import annotations

import json
import logging

from starlette.types import ASGIApp, Receive, Scope, Send

from server.errors import error_body
from server.http.notice import Notice
from server.observe.metrics import HTTP_REFUSED

log = logging.getLogger("taskhook.http")

#: Seconds a refused client is asked to wait.
RETRY_AFTER = 1
EXEMPT_PATHS = frozenset({"/healthz"})


class ConcurrencyLimit:
    """ASGI middleware: at most ``limit`` HTTP requests in the application at once."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit
        self.active = 0
        self._notice = Notice(
            log, "overloaded: %d requests in flight (LIMIT_CONCURRENCY); new ones get 503"
        )
        message = (
            f"more than LIMIT_CONCURRENCY ({limit}) requests are being served; "
            f"retry in {RETRY_AFTER}s"
        )
        self._body = json.dumps(error_body("overloaded", message)).encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in EXEMPT_PATHS:
            await self.app(scope, receive, send)
            return
        if self.active >= self.limit:
            await self._refuse(send)
            return
        self.active += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.active -= 1

    async def _refuse(self, send: Send) -> None:
        HTTP_REFUSED.labels("overloaded").inc()
        self._notice.say(self.active)
        await send(
            {
                "type": "http.response.start",
                "status": 503,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(self._body)).encode()),
                    (b"retry-after", str(RETRY_AFTER).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": self._body})
