"""One reconcile pass: ask upstream about unfinished tasks and merge the answers.

Every answer goes through ``ingest.answer`` and ``Store.ingest_many``, the
same path as a callback, so it is kept raw with source ``reconcile`` and
merged by the same rules; a "not yet" goes the same way with no body, which
moves the task's next check later (``schedule.backoff``). Tasks registered
longer than ``RECONCILE_MAX_AGE`` ago that are still unfinished after their
last check get an ``expired`` observation (a later real result still wins).

Providers are handled concurrently and independently: trouble with one
(``upstream.UpstreamError``) pauses or backs off only that one, recorded in
its ``ProviderHealth``; a pass never raises because of upstream.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from server.core import schedule
from server.core.decide import decide
from server.core.ids import task_key
from server.core.merge import expired
from server.core.types import TaskRecord
from server.errors import UpstreamError
from server.ingest import answer
from server.observe import metrics
from server.observe.logs import event
from server.providers import NAMES, get
from server.providers.base import Answer, Client, Fetch
from server.providers.upstream import (
    BadAnswer,
    ConnectionFailed,
    RateLimited,
    UpstreamUnauthorized,
)
from server.reconcile.health import HealthBoard, ProviderHealth
from server.reconcile.report import Change, PassReport, ProviderReport, error_kind
from server.service import cancel
from server.settings import Settings
from server.store import DueTask, Incoming, IngestOutcome, Store, ingest_rows

log = logging.getLogger("taskhook.reconciler")

#: Tasks one provider may have checked in one scheduled pass (oldest due first).
TASKS_PER_PROVIDER_PASS = 1000
#: How far ahead of its schedule a task may be asked to fill an AceData batch.
BATCH_LOOKAHEAD = schedule.FIRST_BACKOFF

#: Answered chunks of one provider that may wait to be settled while its next call is out.
SETTLE_BEHIND = 2

FINAL = ("succeeded", "failed", "expired")
#: ``progress(provider, checked, total)`` after each upstream call.
Progress = Callable[[str, int, int], None]


@dataclass
class _Context:
    store: Store
    settings: Settings
    now: float
    dry_run: bool
    progress: Progress | None
    #: Send each provider's next call while the previous answers are settled.
    pipeline: bool = True


async def run_pass(
    store: Store,
    clients: dict[str, Client],
    settings: Settings,
    *,
    now: float | None = None,
    providers: Sequence[str] | None = None,
    task_ids: Sequence[str] | None = None,
    ignore_schedule: bool = False,
    dry_run: bool = False,
    health: HealthBoard | None = None,
    limit: int = TASKS_PER_PROVIDER_PASS,
    progress: Progress | None = None,
    pipeline: bool = True,
) -> PassReport:
    """Check the due unfinished tasks of every (or the named) provider once.

    ``pipeline=False`` sends a provider's next call only after the previous
    answers were settled (what passes did before; the benchmark compares both).
    """
    now = time.time() if now is None else now
    health = health or HealthBoard()
    report = PassReport(started_at=now, dry_run=dry_run)
    ctx = _Context(store, settings, now, dry_run, progress, pipeline)
    started = time.perf_counter()
    jobs = []
    for provider in providers or NAMES:
        prep = ProviderReport(provider)
        report.providers[provider] = prep
        jobs.append(
            _provider_pass(
                ctx, prep, clients.get(provider), health[provider], task_ids, ignore_schedule, limit
            )
        )
    results = await asyncio.gather(*jobs, return_exceptions=True)
    for provider, result in zip(report.providers, results, strict=True):
        if isinstance(result, BaseException):  # a bug or the store; never upstream
            log.error("reconcile_provider_failed provider=%s", provider, exc_info=result)
            report.providers[provider].errors["internal"] += 1
    report.duration = time.perf_counter() - started
    if not dry_run:
        metrics.RECONCILE_PASS_SECONDS.observe(report.duration)
    return report


async def _provider_pass(
    ctx: _Context,
    rep: ProviderReport,
    client: Client | None,
    health: ProviderHealth,
    task_ids: Sequence[str] | None,
    ignore_schedule: bool,
    limit: int,
) -> None:
    due = await ctx.store.due_tasks(
        ctx.now,
        limit,
        providers=[rep.provider],
        task_ids=task_ids,
        ignore_schedule=ignore_schedule,
    )
    size = ctx.settings.reconcile_batch_size
    provider = get(rep.provider)
    if due and provider.poll == "batch" and not ignore_schedule and len(due) % size:
        # A batch costs one call whatever its size: fill it with tasks due soon anyway.
        full = -(-len(due) // size) * size
        soon = await ctx.store.due_tasks(
            ctx.now + BATCH_LOOKAHEAD, full, providers=[rep.provider], task_ids=task_ids
        )
        due = _fill(due, soon)
    rep.due = len(due)
    if client is None:
        rep.skipped = f"no token; set {' and '.join(provider.token_settings)}"
    elif not health.may_call(ctx.now):
        rep.skipped = f"paused ({health.trouble}): {health.reason}"
    # Tasks past the age limit expire on time even if their next check is later.
    overdue = await ctx.store.overdue_tasks(
        ctx.now - ctx.settings.reconcile_max_age, limit, providers=[rep.provider]
    )
    if task_ids is None:
        due = _fill(due, overdue)
    rep.due = len(due)
    if rep.skipped:
        # Nobody is asked, but the age limit still holds.
        await _settle(ctx, rep, [], [t for t in due if _too_old(ctx, t)])
        return
    assert client is not None
    await _ask_and_settle(ctx, rep, client, health, due)


async def _ask_and_settle(
    ctx: _Context, rep: ProviderReport, client: Client, health: ProviderHealth, due: list[DueTask]
) -> None:
    """Ask upstream chunk by chunk, each chunk's answers settled in order as they come.

    Pipelined: one task asks, one call at a time, each call sent as soon as the
    previous one succeeded, while this coroutine settles the answers (parse,
    merge, commit) behind it; up to ``SETTLE_BEHIND`` answered chunks may wait
    to be settled, so settling overlaps upstream's latency, and a slow settle
    (a commit, a busy CPU) is made up by the next fast one. The calls are
    exactly as without pipelining, one per chunk, never two at once, and none
    after an error. ``pipeline=False`` asks for a chunk only once the previous
    one is settled.
    """
    size = ctx.settings.reconcile_batch_size
    chunks = [due[start : start + size] for start in range(0, len(due), size)]
    if not chunks:
        return
    # A place for each answered chunk not settled yet; the asker waits for one.
    places = asyncio.Semaphore(SETTLE_BEHIND + 1 if ctx.pipeline else 1)
    answered: asyncio.Queue[Asked | Exception] = asyncio.Queue()

    async def ask_all() -> None:
        try:
            for chunk in chunks:
                await places.acquire()
                asked = await _ask(client, rep, [t.task_id for t in chunk])
                answered.put_nowait(asked)
                if asked[1] is not None:
                    return  # no call after an error
        except Exception as exc:  # a bug, not upstream (``fetch`` returns those): raised below
            answered.put_nowait(exc)

    asker = asyncio.create_task(ask_all())
    try:
        for index, chunk in enumerate(chunks):
            got = await answered.get()
            if isinstance(got, Exception):
                raise got
            answers, error = got
            if error is None:
                health.succeeded(ctx.now)
            else:
                _trouble(ctx, rep, health, error)
            items = [
                _incoming(rep.provider, t.task_id, answers[t.task_id])
                for t in chunk
                if t.task_id in answers
            ]
            rep.checked += len(items)
            rest = chunk if error is None else [t for c in chunks[index:] for t in c]
            await _settle(ctx, rep, items, [t for t in rest if _too_old(ctx, t)])
            places.release()
            if ctx.progress:
                ctx.progress(rep.provider, rep.checked, rep.due)
            if error is not None:
                if isinstance(error, BadAnswer) and not ctx.dry_run:
                    await _keep_bad_answer(ctx.store, rep.provider, error)
                return
    finally:
        await cancel(asker)  # still running if the pass was cancelled or failed


def _fill(due: list[DueTask], soon: list[DueTask]) -> list[DueTask]:
    seen = {task_key(t.task_id) for t in due}
    return due + [t for t in soon if task_key(t.task_id) not in seen]


def _incoming(provider: str, task_id: str, got: Answer | None) -> Incoming:
    if got is None:
        return answer(provider, task_id, None, None)
    return answer(provider, task_id, got.body, got.payload)


def _too_old(ctx: _Context, task: DueTask) -> bool:
    return ctx.now - task.created_at >= ctx.settings.reconcile_max_age


Asked = tuple[Mapping[str, Answer | None], UpstreamError | None]


async def _ask(client: Client, rep: ProviderReport, ids: list[str]) -> Asked:
    """One ``fetch``: its calls counted (report and metrics), its answers and worst error."""
    fetched: Fetch = await client.fetch(ids)
    rep.calls += len(fetched.calls)
    for outcome in fetched.calls:
        metrics.UPSTREAM_CALLS.labels(rep.provider, outcome).inc()
    return fetched.answers, fetched.error


async def _keep_bad_answer(store: Store, provider: str, exc: BadAnswer) -> None:
    """An answer we cannot read is kept in quarantine, so nothing upstream said is lost."""
    try:
        await store.quarantine(provider, exc.content, {}, "bad_upstream_answer", exc.detail)
    except Exception:  # keeping it is best effort; the pass goes on
        log.exception("bad_answer_not_quarantined provider=%s", provider)


def _trouble(
    ctx: _Context, rep: ProviderReport, health: ProviderHealth, exc: UpstreamError
) -> None:
    kind = "bad_answer" if isinstance(exc, BadAnswer) else error_kind(exc)
    if isinstance(exc, ConnectionFailed):
        kind = "connection"
    rep.errors[kind] += 1
    if isinstance(exc, UpstreamUnauthorized):
        health.unauthorized(ctx.now, exc.detail)
        level, name = logging.ERROR, "token_rejected"
    elif isinstance(exc, RateLimited):
        health.rate_limited(ctx.now, exc.retry_after, exc.detail)
        level, name = logging.WARNING, "rate_limited"
    else:
        health.failed(ctx.now, exc.detail)
        level, name = logging.WARNING, "upstream_trouble"
    # key=value pairs apart, the free-text reason last: nothing glued to a value.
    event(
        log,
        name,
        level,
        provider=rep.provider,
        kind=kind,
        paused_s=round(health.paused_until - ctx.now, 1),
        reason=exc.detail,
    )


async def _settle(
    ctx: _Context, rep: ProviderReport, items: list[Incoming], too_old: list[DueTask]
) -> None:
    """Ingest one upstream call's answers, then expire what is too old, in one ``ingest_many``."""
    expiries = [
        Incoming(t.provider, t.task_id, "reconcile", None, expired(t.provider, t.task_id))
        for t in too_old
    ]
    batch = items + expiries
    if not batch:
        return
    if ctx.dry_run:
        outcomes = await _simulate(ctx.store, batch)
    else:
        outcomes = await ctx.store.ingest_many(batch)
    _tally(rep, batch, outcomes, len(items), ctx.dry_run)


async def _simulate(store: Store, batch: list[Incoming]) -> list[IngestOutcome]:
    """What ``ingest_many`` would do to the merged states: ``decide`` folded in memory."""
    records = await store.get_tasks_by_key([task_key(i.task_id) for i in batch])
    held: dict[str, TaskRecord] = {task_key(r.state.task_id): r for r in records}
    outcomes = []
    for item in batch:
        key = task_key(item.task_id)
        decision = decide(held.get(key), item, time.time())
        held[key] = decision.record
        outcomes.append(ingest_rows.outcome(decision))
    return outcomes


def _tally(
    rep: ProviderReport,
    batch: list[Incoming],
    outcomes: list[IngestOutcome],
    answered: int,
    dry_run: bool,
) -> None:
    final_status: dict[str, str] = {}
    #: A task's first item in the batch and its status before that item.
    first: dict[str, tuple[Incoming, str]] = {}
    asked: set[str] = set()
    gaps = 0
    for index, (item, outcome) in enumerate(zip(batch, outcomes, strict=True)):
        key = task_key(item.task_id)
        final_status[key] = outcome.status
        if key not in first:
            first[key] = (item, outcome.previous)
        if index < answered:
            asked.add(key)
        if not outcome.became_final:
            continue
        if outcome.status == "expired":
            rep.expired += 1
            event(log, "task_expired", provider=rep.provider, task_id=outcome.task_id)
            continue
        if outcome.status == "succeeded":
            rep.completed += 1
        else:
            rep.failed += 1
        if not dry_run:
            gaps += 1
            event(
                log,
                "gap_filled",
                provider=rep.provider,
                task_id=outcome.task_id,
                status=outcome.status,
            )
    if gaps:
        metrics.GAPS_FILLED.labels(rep.provider).inc(gaps)
    rep.waiting += sum(1 for k in asked if final_status[k] not in FINAL)
    for key, after in final_status.items():
        item, before = first[key]
        if after != before:
            rep.changes.append(Change(item.task_id, rep.provider, before, after))
