"""Submitting through taskhook: create a task upstream, register it, answer; once per key.

``submit(...)`` is what ``POST /submit/{provider}`` does, in this order:

1. The provider needs its token (else 503 naming the setting; nothing sent).
2. The submit is recorded (``Store.begin_submit``) before anything is sent,
   holding its ``Idempotency-Key`` if it has one. A key held by another
   submit answers from that record instead: the same request gets the first
   answer again (status and body, upstream not called), a request still in
   flight gets 409 ``submit_in_progress``, another request 422.
3. One creation call (``Provider.create``: never retried, bounded by
   ``SUBMIT_TIMEOUT``), with taskhook's own callback URL for the provider.
4. A created task is ingested through the one data path (``Store.ingest``:
   the upstream answer kept as a delivery with source ``submit``, the task
   created ``pending`` or, if its callback came first, kept as it is; the
   metadata laid over it) and committed before the 201 is answered.
5. The answer is recorded (``Store.finish_submit``). 201 and 504 keep the key
   for ``KEY_HOLD`` seconds; after 400, 429 or 502 the key may be used again.

A submit whose process dies during the call leaves a record that lapses
``LAPSE_MARGIN`` seconds after ``SUBMIT_TIMEOUT`` into the 504
``submit_outcome_unknown`` it was begun with: a creation that may exist is
never repeated, by taskhook or through a key.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from server.core.render import task_json
from server.core.tokens import callback_url
from server.errors import Conflict, StoreError, Unavailable, Unprocessable
from server.ingest import submitted
from server.observe.metrics import SUBMITS
from server.providers import Provider
from server.providers.creation import Created, CreationError, OutcomeUnknown
from server.secrets import Secrets
from server.settings import Settings
from server.store import Store, SubmitRecord, SubmitStart

log = logging.getLogger("taskhook.submit")

#: Seconds a key answers with its first answer after a 201 or a 504.
KEY_HOLD = 24 * 3600.0
#: Seconds past SUBMIT_TIMEOUT before an unfinished submit counts as a 504.
LAPSE_MARGIN = 30.0
#: Days submit records are kept (those still holding a key are kept longer).
RECORD_DAYS = 30


@dataclass(frozen=True)
class Reply:
    """What ``POST /submit`` answers: a status, the JSON text of its body, headers."""

    status: int
    body: str
    headers: Mapping[str, str] = field(default_factory=dict)
    submit_id: int | None = None
    replayed: bool = False


def dumps(value: Any) -> str:
    """JSON text as kept and answered (lone surrogates escaped, so it always encodes)."""
    return json.dumps(value, ensure_ascii=True, separators=(",", ":"))


def fingerprint(provider: str, request: Mapping[str, Any], metadata: Any) -> str:
    """A digest of what was asked; key order and spacing do not matter."""
    text = json.dumps([provider, request, metadata], sort_keys=True, ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()


#: What every answer of an unknown outcome tells the caller to do.
MAY_EXIST = (
    "a task may have been created (and billed) upstream, so taskhook does not send it again;"
    " if it was, its callback or GET /tasks will show it"
)


def _unknown(provider: str, submit_id: int, detail: str, trace_id: str | None) -> OutcomeUnknown:
    trace = f", trace id {trace_id}" if trace_id else ""
    return OutcomeUnknown(
        provider,
        f"{detail}: {MAY_EXIST} (submit {submit_id}{trace}; GET /submits/{submit_id} shows"
        " this record)",
        trace_id=trace_id,
    )


async def submit(
    store: Store,
    settings: Settings,
    secrets: Secrets,
    provider: Provider,
    request: Mapping[str, Any],
    metadata: Mapping[str, Any] | None,
    key: str | None,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
) -> Reply:
    """Create the task upstream once and register it; the answer to give (module docstring)."""
    if not provider.configured(settings):
        SUBMITS.labels(provider.name, "not_configured").inc()
        names = " and ".join(provider.token_settings)
        raise Unavailable(
            f"{provider.name} has no token: set {names} to submit through taskhook"
            " (nothing was sent)",
            code="provider_not_configured",
        )
    now = time.time()
    asked = fingerprint(provider.name, request, metadata)
    stopped = "the process handling this submit stopped before upstream answered"
    pessimistic = OutcomeUnknown(provider.name, f"{stopped}. {MAY_EXIST[0].upper()}{MAY_EXIST[1:]}")
    record, started = await store.begin_submit(
        SubmitStart(
            provider=provider.name,
            key=key,
            fingerprint=asked,
            status=pessimistic.http_status,
            body=dumps(pessimistic.body()),
            lapse_after=settings.submit_timeout + LAPSE_MARGIN,
            hold_for=KEY_HOLD,
            forget_before=now - RECORD_DAYS * 86400,
        )
    )
    if not started:
        return _from_record(record, provider.name, asked, now)
    own_url = callback_url(settings.base_url, secrets.callback_secrets[0], provider.name)
    creating = provider.create(
        settings, request, own_url, within=settings.submit_timeout, transport=transport
    )
    return await _create(store, provider, creating, metadata, record)


def _from_record(record: SubmitRecord, provider: str, asked: str, now: float) -> Reply:
    """The answer for a key another submit holds."""
    if record.fingerprint != asked:
        SUBMITS.labels(provider, "key_reused").inc()
        raise Unprocessable(
            f"this Idempotency-Key was first used (submit {record.id}) with another request;"
            " a key names one request: send that same request, or use a new key",
            code="idempotency_key_reused",
        )
    if not record.settled(now):
        SUBMITS.labels(provider, "in_progress").inc()
        raise Conflict(
            f"the first request with this Idempotency-Key (submit {record.id}) is still waiting"
            " for upstream; send it again in a few seconds to get its answer",
            code="submit_in_progress",
        )
    SUBMITS.labels(provider, "replayed").inc()
    return Reply(record.status, record.body, submit_id=record.id, replayed=True)


async def _create(
    store: Store,
    provider: Provider,
    creating: Awaitable[Created],
    metadata: Mapping[str, Any] | None,
    record: SubmitRecord,
) -> Reply:
    """Steps 3 to 5 for the submit ``record`` just begun: await the creation call, record it."""
    try:
        created = await creating
    except OutcomeUnknown as exc:
        unknown = _unknown(provider.name, record.id, exc.message, exc.trace_id)
        await store.finish_submit(
            record.id,
            unknown.http_status,
            dumps(unknown.body()),
            trace_id=exc.trace_id,
            hold_for=KEY_HOLD,
        )
        SUBMITS.labels(provider.name, "unknown").inc()
        log.warning(
            "submit outcome unknown provider=%s submit=%s trace_id=%s: %s",
            provider.name,
            record.id,
            exc.trace_id,
            exc.message,
        )
        raise unknown from exc
    except CreationError as exc:
        await store.finish_submit(record.id, exc.http_status, dumps(exc.body()), hold_for=None)
        SUBMITS.labels(provider.name, exc.kind).inc()
        log.info(
            "submit refused provider=%s submit=%s status=%s code=%s",
            provider.name,
            record.id,
            exc.http_status,
            exc.code,
        )
        raise
    reply = await _register(store, provider, created, metadata, record)
    SUBMITS.labels(provider.name, "created").inc()
    log.info(
        "submit created provider=%s submit=%s task_id=%s trace_id=%s",
        provider.name,
        record.id,
        created.task_id,
        created.trace_id,
    )
    return reply


async def _register(
    store: Store,
    provider: Provider,
    created: Created,
    metadata: Mapping[str, Any] | None,
    record: SubmitRecord,
) -> Reply:
    """Ingest the created task (committed), then record and return the 201."""
    item = submitted(provider.name, created.task_id, created.trace_id, created.body, metadata or {})
    try:
        await store.ingest(item)
        task = await store.get_task(created.task_id)
        if task is None:
            raise StoreError(f"task {created.task_id!r} was not found right after its commit")
    except StoreError as exc:
        # Created upstream but not registered: hold the key so no retry creates it again.
        failed = StoreError(
            f"{provider.name} created task {created.task_id!r}, but taskhook could not register"
            f" it ({exc.message}); register it with POST /tasks once the store is back, and do"
            " not submit it again",
            code="submit_not_registered",
        )
        failed.http_status = exc.http_status
        try:
            await store.finish_submit(
                record.id,
                failed.http_status,
                dumps(failed.body()),
                task_id=created.task_id,
                trace_id=created.trace_id,
                hold_for=KEY_HOLD,
            )
        except StoreError:
            log.warning("submit %s could not record its answer", record.id)
        log.error(
            "submit created but not registered provider=%s submit=%s task_id=%s: %s",
            provider.name,
            record.id,
            created.task_id,
            exc.message,
        )
        raise failed from exc
    body = dumps(task_json(task))
    hold = KEY_HOLD if record.key is not None else None
    await store.finish_submit(
        record.id,
        201,
        body,
        task_id=created.task_id,
        trace_id=created.trace_id,
        hold_for=hold,
    )
    return Reply(201, body, submit_id=record.id)
