"""The one path every payload takes: parse -> keep raw -> merge -> commit.

A callback, a reconciler answer, a quarantine replay and a submit's creation
answer all come through here, so they are stored and merged by exactly the
same code.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from server.core.ids import task_key
from server.core.types import Observation, Source, Status
from server.errors import ParseError
from server.observe.logs import event
from server.providers.parse import parse_body, parse_payload
from server.store import Incoming, IngestOutcome, Store

log = logging.getLogger("taskhook.ingest")

#: Request headers worth keeping with a quarantined body; never credentials.
KEPT_HEADERS = ("content-type", "content-length", "user-agent", "x-forwarded-for", "x-request-id")


class Quarantined(Exception):
    """A delivery was kept in quarantine instead of being merged."""

    def __init__(self, error: ParseError, quarantine_id: int) -> None:
        super().__init__(error.message)
        self.error = error
        self.quarantine_id = quarantine_id


def safe_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {name: headers[name] for name in KEPT_HEADERS if name in headers}


async def receive(
    store: Store,
    provider: str,
    body: bytes,
    *,
    headers: Mapping[str, str] | None = None,
    source: Source = "callback",
    quarantine_id: int | None = None,
) -> IngestOutcome:
    """Store and merge one delivered body, or quarantine it and raise ``Quarantined``.

    A body naming a task held under another provider raises the store's
    ``ProviderMismatch`` (409): the body is quarantined, the task unchanged.
    """
    try:
        observation = parse_body(provider, body)
    except ParseError as exc:
        if quarantine_id is None:
            quarantine_id = await store.quarantine(
                provider, body, safe_headers(headers or {}), exc.code, exc.message
            )
        raise Quarantined(exc, quarantine_id) from exc
    assert observation.task_id is not None
    return await store.ingest(
        Incoming(
            provider,
            observation.task_id,
            source,
            body,
            observation,
            quarantine_id=quarantine_id,
            headers=safe_headers(headers or {}),
        )
    )


def answer(provider: str, asked_id: str, body: bytes | None, payload: Any) -> Incoming:
    """A reconciler answer for ``asked_id`` as an Incoming (``body`` None: no answer yet).

    An answer we cannot read is still kept raw, as a check that told us nothing.
    """
    if body is None:
        return Incoming(provider, asked_id, "reconcile", None, None, check=True)
    try:
        observation = parse_payload(provider, payload)
    except ParseError as exc:
        event(
            log,
            "unreadable_answer",
            logging.WARNING,
            provider=provider,
            task_id=asked_id,
            reason=exc.message,
        )
        observation = None
    if observation is not None and task_key(observation.task_id or "") != task_key(asked_id):
        event(
            log,
            "answer_names_another_task",
            logging.WARNING,
            provider=provider,
            task_id=asked_id,
            answered=observation.task_id,
        )
        observation = None
    return Incoming(provider, asked_id, "reconcile", body, observation, check=True)


def submitted(
    provider: str,
    task_id: str,
    trace_id: str | None,
    body: bytes,
    metadata: Mapping[str, Any],
) -> Incoming:
    """Upstream's answer to a creation call (``POST /submit``) as an Incoming.

    It says the task exists: ``pending`` (merging it fills the trace id and
    moves nothing back, so a task whose callback came first keeps its state),
    with the submitter's metadata laid over the task's.
    """
    observation = Observation(provider, task_id, Status.PENDING, trace_id=trace_id)
    return Incoming(provider, task_id, "submit", body, observation, metadata=dict(metadata))
