"""A receiving application for webhook tests: a Starlette app under uvicorn on loopback.

It verifies every request with ``standardwebhooks.Webhook.verify`` (as a real
application would) against each secret it was given, records what arrived and
answers as told: 2xx, a failure status, 410, or hang until the sender gives up.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from tests.harness import free_port, wait_until

#: ``rule(delivery) -> status`` (an int) or ``"hang"``; None: 204.
Rule = Callable[["Delivery"], "int | str | None"]


@dataclass(frozen=True)
class Delivery:
    """One request the receiver got."""

    event_id: str
    timestamp: str
    signature: str
    body: bytes
    received_at: float
    #: Indexes (into ``Receiver.secrets``) of the secrets that verified it.
    verified_by: tuple[int, ...]
    #: What the rule told the receiver to answer (None: 204).
    answer: int | str | None = None

    @property
    def accepted(self) -> bool:
        """Verified and answered 2xx: the application took it."""
        ok = self.answer is None or (isinstance(self.answer, int) and self.answer < 300)
        return bool(self.verified_by) and ok

    @property
    def event(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed

    @property
    def type(self) -> str:
        return str(self.event["type"])

    @property
    def task_id(self) -> str:
        return str(self.event["data"]["task_id"])


class HangFirst:
    """A rule: the first delivery hangs (no answer), every later one is accepted (204).

    ``calls`` holds every delivery the rule was asked about, in order.
    """

    def __init__(self) -> None:
        self.calls: list[Delivery] = []

    def __call__(self, delivery: Delivery) -> str | None:
        self.calls.append(delivery)
        return "hang" if len(self.calls) == 1 else None


@dataclass
class Receiver:
    secrets: list[str] = field(default_factory=list)
    rule: Rule | None = None
    deliveries: list[Delivery] = field(default_factory=list)
    url: str = ""
    _closing: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # -- what arrived -------------------------------------------------------

    def all(self) -> list[Delivery]:
        with self._lock:
            return list(self.deliveries)

    def verified(self) -> list[Delivery]:
        return [d for d in self.all() if d.verified_by]

    def accepted(self) -> list[Delivery]:
        """Deliveries that were verified and answered 2xx (what the application took)."""
        return [d for d in self.all() if d.accepted]

    def ids(self) -> set[str]:
        return {d.event_id for d in self.verified()}

    # -- the app ------------------------------------------------------------

    async def _handle(self, request: Request) -> Response:
        body = await request.body()
        headers = dict(request.headers)
        verified = []
        for index, secret in enumerate(list(self.secrets)):
            with contextlib.suppress(WebhookVerificationError):
                Webhook(secret).verify(body, headers)
                verified.append(index)
        delivery = Delivery(
            event_id=headers.get("webhook-id", ""),
            timestamp=headers.get("webhook-timestamp", ""),
            signature=headers.get("webhook-signature", ""),
            body=body,
            received_at=time.time(),
            verified_by=tuple(verified),
        )
        answer = self.rule(delivery) if self.rule is not None and verified else None
        delivery = dataclasses.replace(delivery, answer=answer)
        with self._lock:
            self.deliveries.append(delivery)
        if not verified:
            return PlainTextResponse("signature did not verify", status_code=401)
        if answer == "hang":  # until the sender gives up (or the receiver stops)
            while not self._closing:  # noqa: ASYNC110 - the flag is set from another thread
                await asyncio.sleep(0.05)
        if isinstance(answer, int):
            return PlainTextResponse(f"told to answer {answer}", status_code=answer)
        return Response(status_code=204)

    @contextlib.contextmanager
    def serve(self) -> Iterator[Receiver]:
        """Run under uvicorn in a thread on a free loopback port while the block runs."""
        port = free_port()
        app = Starlette(routes=[Route("/hook", self._handle, methods=["POST"])])
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            log_level="warning",
            lifespan="off",
            timeout_graceful_shutdown=1,
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        wait_until(lambda: server.started, 10, what="the receiver to start")
        self.url = f"http://127.0.0.1:{port}/hook"
        try:
            yield self
        finally:
            self._closing = True
            server.should_exit = True
            thread.join(10)
