"""Callback delivery for the fake upstream, with the misbehaviour real upstreams show.

A finished task's callback can be dropped (never sent), duplicated (sent twice),
delayed by a random bounded amount so that later tasks overtake it (reorder),
or preceded by an empty ``{}`` body (an upstream bug taskhook must survive).
Every decision is drawn from one seeded RNG, in submission order, so a test
with a fixed seed sees the same drops and duplicates on every run.

Only the ``callback_url`` given when the task was created is ever contacted.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import httpx

log = logging.getLogger("fake_upstream.callbacks")

#: Longest random delay ``reorder`` may add, whatever is configured.
MAX_REORDER_SECONDS = 30.0


@dataclass
class CallbackPolicy:
    """How callbacks misbehave. Rates are probabilities in [0, 1]."""

    drop: float = 0.0
    duplicate: float = 0.0
    #: Upper bound, in seconds, of a random delay added to each callback; 0 keeps finishing order.
    reorder: float = 0.0
    empty_first: float = 0.0
    #: Seedance 2.0: send an IN_PROGRESS callback just before the final one.
    intermediate: bool = False
    #: Send the whole task wrapper (``{id, response, ...}``) instead of the bare response body.
    wrapper: bool = False
    timeout: float = 5.0

    def update(self, changes: Mapping[str, Any]) -> None:
        """Apply run-time changes; unknown names and out-of-range rates raise ValueError."""
        known = {f.name: f.type for f in fields(self)}
        for name, value in changes.items():
            if name not in known:
                raise ValueError(f"unknown callback option {name!r}; known: {sorted(known)}")
            if known[name] == "bool":
                setattr(self, name, bool(value))
                continue
            number = float(value)
            if name in ("drop", "duplicate", "empty_first") and not 0.0 <= number <= 1.0:
                raise ValueError(f"callback option {name}={value!r} must be between 0 and 1")
            if number < 0:
                raise ValueError(f"callback option {name}={value!r} must not be negative")
            setattr(self, name, min(number, MAX_REORDER_SECONDS) if name == "reorder" else number)


@dataclass
class CallbackStats:
    submitted: int = 0  # finished tasks that had a callback_url
    sent: int = 0  # POSTs answered with 2xx
    rejected: int = 0  # POSTs answered with another status
    failed: int = 0  # POSTs that got no answer (refused, timed out)
    dropped: int = 0
    duplicated: int = 0
    empty_first: int = 0
    intermediate: int = 0
    cancelled: int = 0  # still waiting when the fake shut down

    def to_json(self) -> dict[str, int]:
        return asdict(self)


@dataclass
class CallbackJob:
    """What one finished task would send: ``bodies`` in order, the final body last."""

    task_id: str
    url: str
    final: dict[str, Any]
    before: list[dict[str, Any]] = field(default_factory=list)  # intermediate bodies


class CallbackSender:
    """Sends callbacks in the background; ``stop()`` ends it within a bound."""

    def __init__(
        self,
        policy: CallbackPolicy,
        rng: random.Random,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.policy = policy
        self.stats = CallbackStats()
        self._rng = rng
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._queue: asyncio.Queue[list[tuple[str, str, dict[str, Any]]]] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._delayed: set[asyncio.Task[None]] = set()
        self._pending = 0
        self._idle = asyncio.Event()
        self._idle.set()

    async def start(self) -> None:
        self._client = httpx.AsyncClient(
            transport=self._transport, timeout=self.policy.timeout, trust_env=False
        )  # trust_env off: a proxy from the environment must not see callbacks
        self._worker = asyncio.create_task(self._run_queue(), name="fake-callbacks")

    def submit(self, job: CallbackJob) -> None:
        """Decide this job's fate now (in submission order, for determinism) and schedule it."""
        p, rng = self.policy, self._rng
        self.stats.submitted += 1
        if rng.random() < p.drop:
            self.stats.dropped += 1
            log.info("callback dropped on purpose: task %s", job.task_id)
            return
        bodies: list[dict[str, Any]] = []
        if rng.random() < p.empty_first:
            self.stats.empty_first += 1
            bodies.append({})
        if p.intermediate and job.before:
            self.stats.intermediate += len(job.before)
            bodies.extend(job.before)
        bodies.append(job.final)
        if rng.random() < p.duplicate:
            self.stats.duplicated += 1
            bodies.append(job.final)
        sends = [(job.task_id, job.url, body) for body in bodies]
        self._pending += 1
        self._idle.clear()
        if p.reorder > 0:
            delay = rng.uniform(0, p.reorder)
            task = asyncio.create_task(self._send_later(delay, sends), name="fake-callback-later")
            self._delayed.add(task)
            task.add_done_callback(self._delayed.discard)
        else:
            self._queue.put_nowait(sends)

    async def drained(self) -> None:
        """Wait until every submitted callback has been sent (or has failed)."""
        await self._idle.wait()

    async def stop(self, grace: float = 2.0) -> None:
        """Let queued callbacks go out for up to ``grace`` seconds, then cancel the rest."""
        for task in list(self._delayed):
            task.cancel()  # deliberately late: not worth holding shutdown for
        try:
            await asyncio.wait_for(self._queue.join(), grace)
        except TimeoutError:
            log.warning("callbacks still queued after %.1fs at shutdown; cancelling", grace)
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, *self._delayed, return_exceptions=True)
            self._worker = None
        while not self._queue.empty():
            self._queue.get_nowait()
            self._queue.task_done()
            self._done(cancelled=True)
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _run_queue(self) -> None:
        while True:
            sends = await self._queue.get()
            try:
                await self._send_all(sends)
            finally:
                self._queue.task_done()
                self._done()

    async def _send_later(self, delay: float, sends: list[tuple[str, str, dict[str, Any]]]) -> None:
        try:
            await asyncio.sleep(delay)
            await self._send_all(sends)
        except asyncio.CancelledError:
            self._done(cancelled=True)
            raise
        self._done()

    async def _send_all(self, sends: list[tuple[str, str, dict[str, Any]]]) -> None:
        assert self._client is not None, "CallbackSender.start() was not awaited"
        for task_id, url, body in sends:
            try:
                response = await self._client.post(url, json=body)
            except httpx.HTTPError as exc:
                self.stats.failed += 1
                log.warning("callback for task %s got no answer: %s", task_id, type(exc).__name__)
                continue
            if response.is_success:
                self.stats.sent += 1
            else:
                self.stats.rejected += 1
                log.warning("callback for task %s answered %d", task_id, response.status_code)

    def _done(self, cancelled: bool = False) -> None:
        if cancelled:
            self.stats.cancelled += 1
        self._pending -= 1
        if self._pending <= 0:
            self._pending = 0
            self._idle.set()
