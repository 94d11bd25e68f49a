"""Background services: the one shape every background loop has, and the one place that runs them.

A ``Service`` (the reconciler loop, the archiver, webhook delivery, ...) has a
``name``, ``start()``, ``stop()`` and ``status()``. ``Services`` starts them in
order and stops them in reverse, and watches each one: a service whose task
ends before it was asked to stop, or whose ``start()`` failed, is *dead*. A
death is logged once, with its reason, and from then on the service's status is
``{"ok": false, "reason": ...}`` (so ``/readyz`` answers 503) until the process
restarts. A ``status()`` that raises is itself reported as not ok, never as an
error of the caller.

The pieces services that claim work share are here too: ``holder_id()`` names
the claimer, ``Inflight`` keeps the copies or attempts running at once, and
``cancel()`` ends a service's own loops.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import secrets
import socket
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

log = logging.getLogger("taskhook.services")

T = TypeVar("T")


@runtime_checkable
class Service(Protocol):
    """A part of the process that works in the background."""

    #: Its key in ``/readyz``'s checks and in the logs.
    name: str

    async def start(self) -> asyncio.Task[Any] | None:
        """Begin working; return the task whose end means the service died (None: no loop)."""
        ...

    async def stop(self) -> None:
        """Finish or cancel the work within a bound the service documents. Idempotent."""
        ...

    async def status(self) -> dict[str, Any]:
        """Its health: ``ok`` (bool), ``reason`` when not ok, and whatever else helps."""
        ...


@dataclass
class _Entry:
    service: Service
    task: asyncio.Task[Any] | None = None
    stopping: bool = False
    death: str | None = None


class Services:
    """The running services of one process, by name."""

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> list[str]:
        return list(self._entries)

    def get(self, name: str) -> Service | None:
        entry = self._entries.get(name)
        return entry.service if entry else None

    async def start(self, service: Service) -> None:
        """Start ``service`` (stopping one of the same name first); a failure is a death."""
        if service.name in self._entries:
            await self._stop_entry(self._entries.pop(service.name))
        entry = self._entries[service.name] = _Entry(service)
        try:
            entry.task = await service.start()
        except Exception as exc:  # a service that cannot start must not stop the others
            self._died(entry, f"it could not start: {type(exc).__name__}: {exc}", exc)
            return
        if entry.task is not None:
            entry.task.add_done_callback(functools.partial(self._ended, entry))

    async def stop(self) -> None:
        """Stop every service, the last started first; a failing stop is logged, not raised."""
        for name in reversed(list(self._entries)):
            await self._stop_entry(self._entries[name])

    async def status(self, name: str) -> dict[str, Any]:
        entry = self._entries[name]
        try:
            body = dict(await entry.service.status())
        except Exception as exc:  # a broken status() is itself the health to report
            body = {"ok": False, "reason": f"its status failed: {type(exc).__name__}: {exc}"}
        if entry.death is not None:
            body.update(ok=False, reason=entry.death)
        return body

    async def statuses(self) -> dict[str, dict[str, Any]]:
        """Every service's status, by name (what ``/readyz`` and the dashboard show)."""
        return {name: await self.status(name) for name in list(self._entries)}

    # -- internals ----------------------------------------------------------------------

    async def _stop_entry(self, entry: _Entry) -> None:
        if entry.stopping:
            return
        entry.stopping = True
        try:
            await entry.service.stop()
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:
            task = entry.task
            died_of_it = task is not None and task.done() and not task.cancelled()
            if died_of_it and task is not None and task.exception() is exc:
                return  # a stop() that re-raises the death, already logged
            if isinstance(exc, asyncio.CancelledError):
                raise
            log.exception("service %s failed to stop cleanly", entry.service.name)

    def _ended(self, entry: _Entry, task: asyncio.Task[Any]) -> None:
        if entry.stopping:
            return
        if task.cancelled():
            self._died(entry, "its task was cancelled", None)
            return
        exc = task.exception()
        if exc is not None:
            self._died(entry, f"it died: {type(exc).__name__}: {exc}", exc)
        else:
            self._died(entry, "its loop ended by itself", None)

    def _died(self, entry: _Entry, reason: str, exc: BaseException | None) -> None:
        if entry.death is not None:
            return
        entry.death = f"{reason}; restart the process (see the log)"
        log.error(
            "service %s stopped working: %s",
            entry.service.name,
            reason,
            exc_info=(type(exc), exc, exc.__traceback__) if exc is not None else None,
        )


# -- what services that claim work share ---------------------------------------------------


def holder_id() -> str:
    """``host:pid:nonce``: who holds a claim, unique per process and start (and readable
    in the database)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


class Inflight(Generic[T]):
    """The pieces of work a service runs at once (copies, attempts).

    A piece that crashes is logged with ``crashed`` as the message; every end,
    whatever it was, calls ``on_end`` (a free slot: time to claim more).
    """

    def __init__(self, logger: logging.Logger, crashed: str, on_end: Callable[[], None]) -> None:
        self._tasks: set[asyncio.Task[T]] = set()
        self._log, self._crashed, self._on_end = logger, crashed, on_end

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(self, work: Coroutine[Any, Any, T], name: str) -> asyncio.Task[T]:
        task = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._ended)
        return task

    async def wait(self, timeout: float) -> None:  # noqa: ASYNC109
        """Until every piece has ended or ``timeout`` seconds have passed."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)

    async def cancel(self) -> None:
        """Cancel every piece still running and wait until each has ended."""
        running = list(self._tasks)
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)

    def _ended(self, task: asyncio.Task[T]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._log.error(self._crashed, exc_info=task.exception())
        self._on_end()


async def cancel(*tasks: asyncio.Task[Any] | None) -> None:
    """Cancel a service's own loops and wait until each has ended."""
    for task in tasks:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
