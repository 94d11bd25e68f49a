"""Configuration and in-memory state of the fake upstream: tasks, faults, counters."""

from __future__ import annotations

import asyncio
import contextlib
import random
import string
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from scripts.fake_upstream_callbacks import CallbackJob, CallbackPolicy, CallbackSender
from scripts.fake_upstream_creations import CreationDesk, CreationSettings
from scripts.fake_upstream_payloads import (
    ACEDATA,
    PROVIDERS,
    FakeTask,
    acedata_response,
    acedata_wrapper,
    seedance2_body,
    task_key,
)

__all__ = ["ACEDATA", "FAULT_KINDS", "MAX_HOLD_SECONDS", "PROVIDERS", "FakeConfig", "FakeState"]

FAULT_KINDS = ("429", "500", "401", "timeout", "malformed", "empty")
MAX_HOLD_SECONDS = 60.0


@dataclass(frozen=True)
class FakeConfig:
    acedata_token: str = "fake-acedata-token"
    seedance2_key: str = "fake-seedance2-key"
    finish_after: float = 5.0  # default seconds from creation until a task finishes
    seed: int | None = None  # fixes ids, fault draws and callback misbehaviour
    public_url: str = ""  # base of result URLs; empty: the base URL the task was created through
    file_bytes: int = 4096  # size of every file under /files
    result_url_ttl: int = 86400  # seconds a Seedance 2.0 result URL stays valid
    acedata_pending: str = "status"  # "status" | "empty": what unfinished SeeDance/Dreamina answer
    seedance_shape: str = "seed"  # SeeDance's data in tasks-endpoint answers: SEEDANCE_SHAPES
    unknown_as_empty: bool = False  # retrieve_batch: unknown/unfinished tasks as {} items
    max_batch_ids: int = 0  # > 0: a retrieve_batch with more ids answers 400
    batch_not_implemented: tuple[str, ...] = ()  # services whose retrieve_batch answers 400
    faults: Mapping[str, float] = field(default_factory=dict)  # kind -> rate, every provider
    provider_faults: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    retry_after: float = 1.0  # Retry-After seconds of injected 429s
    timeout_hold: float = 10.0  # seconds an injected timeout holds the request (at most 60)
    callbacks: CallbackPolicy = field(default_factory=CallbackPolicy)
    tick: float = 0.2  # seconds between checks for tasks that finished on time
    latency: float = 0.0  # seconds every tasks-endpoint call waits before it answers (benchmarks)
    create_latency: float = 0.0  # seconds every creation call waits before it answers


def _rng(seed: int | None, purpose: str) -> random.Random:
    # One generator per purpose, so that e.g. extra fault draws do not shift callback decisions.
    return random.Random(None if seed is None else f"{seed}:{purpose}")


class FakeState:
    """Tasks, faults and counters of one fake; lives in ``app.state.fake``."""

    def __init__(self, config: FakeConfig) -> None:
        self.config = config
        self.ids_rng = _rng(config.seed, "ids")
        self.fault_rng = _rng(config.seed, "faults")
        self.tasks: dict[tuple[str, str], FakeTask] = {}
        self.rates: dict[str, dict[str, float]] = {"*": dict(config.faults)}
        self.rates.update({p: dict(r) for p, r in config.provider_faults.items()})
        self.next: dict[str, list[str]] = defaultdict(list)  # "*" or provider -> forced answers
        self.retry_after = config.retry_after
        self.timeout_hold = min(config.timeout_hold, MAX_HOLD_SECONDS)
        self.batch_not_implemented = set(config.batch_not_implemented)
        policy = CallbackPolicy(**asdict(config.callbacks))
        self.sender = CallbackSender(policy, _rng(config.seed, "callbacks"))
        self.stopping = asyncio.Event()
        self.calls: dict[str, Counter[str]] = defaultdict(Counter)
        self.batch_ids: dict[str, list[int]] = defaultdict(list)
        self.faults_by_provider: dict[str, Counter[str]] = defaultdict(Counter)
        self.unauthorized: Counter[str] = Counter()
        self.files: Counter[str] = Counter()
        self.creations = CreationDesk(
            CreationSettings(
                latency=config.create_latency,
                finish_after=config.finish_after,
                task_outcome="succeeded",
                answer_shape="full",
            )
        )

    # -- tasks -------------------------------------------------------------
    def new_id(self, provider: str) -> str:
        if provider == "seedance2":
            alphabet = string.ascii_letters + string.digits
            return "asyntask_" + "".join(self.ids_rng.choices(alphabet, k=32))
        return str(uuid.UUID(int=self.ids_rng.getrandbits(128), version=4))

    def create(self, specs: Iterable[Mapping[str, Any]], base_url: str) -> list[FakeTask]:
        """Create tasks from control-API specs; all or none (ValueError, KeyError on a clash)."""
        tasks = [self._build(spec, base_url) for spec in specs]
        keys = [(t.provider, task_key(t.task_id)) for t in tasks]
        for task, key in zip(tasks, keys, strict=True):
            if key in self.tasks or keys.count(key) > 1:
                raise KeyError(f"task {task.task_id} already exists for {task.provider}")
        self.tasks.update(zip(keys, tasks, strict=True))
        self.dispatch_due()  # finish_after=0 tasks call back at once
        return tasks

    def _build(self, spec: Mapping[str, Any], base_url: str) -> FakeTask:
        provider, outcome = spec.get("provider"), spec.get("outcome", "succeeded")
        if provider not in PROVIDERS:
            raise ValueError(f"provider {provider!r} is not one of {', '.join(PROVIDERS)}")
        if outcome not in ("succeeded", "failed"):
            raise ValueError(f"outcome {outcome!r} is not 'succeeded' or 'failed'")
        task_id = spec.get("task_id") or self.new_id(provider)
        finish_after = spec.get("finish_after", self.config.finish_after)
        callback_url = spec.get("callback_url")
        if not isinstance(task_id, str) or len(task_id) > 200:
            raise ValueError(f"task_id {task_id!r} must be a string of at most 200 characters")
        if isinstance(finish_after, bool) or not isinstance(finish_after, int | float):
            raise ValueError(f"finish_after {finish_after!r} must be a number of seconds")
        if finish_after < 0:
            raise ValueError(f"finish_after {finish_after!r} must not be negative")
        if callback_url is not None and not str(callback_url).startswith(("http://", "https://")):
            raise ValueError("callback_url must start with http:// or https://")
        now, rng = time.time(), self.ids_rng
        stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime(now))
        lower = string.ascii_lowercase + string.digits
        return FakeTask(
            provider=provider,
            task_id=task_id,
            outcome=outcome,
            created_at=now,
            trace_id=spec.get("trace_id") or str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            finish_at=now + finish_after,
            base_url=(self.config.public_url or base_url).rstrip("/"),
            callback_url=callback_url,
            upstream_id=f"cgt-{stamp}-" + "".join(rng.choices(lower, k=5)),
            request_id=stamp
            + "".join(rng.choices(string.digits, k=9))
            + "".join(rng.choices(string.ascii_letters, k=8)),
        )

    def find(self, provider: str, task_id: str) -> FakeTask | None:
        return self.tasks.get((provider, task_key(task_id)))

    def find_by_trace(self, provider: str, trace_id: str) -> FakeTask | None:
        candidates = (t for t in self.tasks.values() if t.provider == provider)
        return next((t for t in candidates if t.trace_id == trace_id), None)

    def finish(self, task_ids: list[str] | None = None) -> int:
        """Finish the named tasks (every task when None) now and send their callbacks."""
        now, keys, count = time.time(), {task_key(t) for t in task_ids or ()}, 0
        for (_, key), task in self.tasks.items():
            if (task_ids is None or key in keys) and not task.finished(now):
                task.finish_at, count = now, count + 1
        self.dispatch_due()
        return count

    def dispatch_due(self) -> None:
        """Hand every newly finished task with a callback_url to the sender, in finishing order."""
        now, policy = time.time(), self.sender.policy
        due = [t for t in self.tasks.values() if t.callback_url and not t.dispatched]
        for t in sorted((t for t in due if t.finished(now)), key=lambda t: t.finish_at):
            t.dispatched = True
            before: list[dict[str, Any]] = []
            if t.provider == "seedance2":
                ttl = self.config.result_url_ttl
                final = seedance2_body(t, now, ttl)
                before.append(seedance2_body(t, now, ttl, in_progress=True))
            else:
                final = acedata_response(t, now) or {}
                final = acedata_wrapper(t, final) if policy.wrapper else final
            self.sender.submit(CallbackJob(t.task_id, str(t.callback_url), final, before))

    async def tick_forever(self) -> None:
        while not self.stopping.is_set():
            self.dispatch_due()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), self.config.tick)

    # -- faults ------------------------------------------------------------
    def draw_fault(self, provider: str) -> str | None:
        """The fault to inject into this call, if any: forced answers first, then rates."""
        fault: str | None = None
        queues = [q for q in (self.next[provider], self.next["*"]) if q]
        if queues:
            forced = queues[0].pop(0)
            fault = None if forced == "ok" else forced
        else:
            rates = {**self.rates.get("*", {}), **self.rates.get(provider, {})}
            roll, edge = self.fault_rng.random(), 0.0
            for kind in FAULT_KINDS:
                edge += rates.get(kind, 0.0)
                if roll < edge:
                    fault = kind
                    break
        if fault is not None:
            self.faults_by_provider[provider][fault] += 1
        return fault

    def set_faults(self, body: Mapping[str, Any]) -> None:
        """Apply a ``POST /_fake/faults`` body; nothing changes when part of it is invalid."""
        target = body.get("provider") or "*"
        if target != "*" and target not in PROVIDERS:
            raise ValueError(f"provider {target!r} is not one of {', '.join(PROVIDERS)}")
        rates = {kind: float(rate) for kind, rate in (body.get("rates") or {}).items()}
        for kind, rate in rates.items():
            if kind not in FAULT_KINDS or not 0 <= rate <= 1:
                raise ValueError(f"fault rate {kind}={rate!r}: kinds are {FAULT_KINDS}, rates 0..1")
        forced = list(body.get("next") or [])
        if unknown := [k for k in forced if k not in (*FAULT_KINDS, "ok")]:
            raise ValueError(f"next answers {unknown} are not in {(*FAULT_KINDS, 'ok')}")
        not_implemented = set(body.get("batch_not_implemented", self.batch_not_implemented))
        if unknown := not_implemented - set(ACEDATA):
            raise ValueError(f"batch_not_implemented {sorted(unknown)} are not AceData services")
        retry_after = max(0.0, float(body.get("retry_after", self.retry_after)))
        hold = min(MAX_HOLD_SECONDS, max(0.0, float(body.get("timeout_hold", self.timeout_hold))))
        if body.get("clear"):
            self.rates[target], self.next[target] = {}, []
        self.rates.setdefault(target, {}).update(rates)
        self.next[target].extend(forced)
        self.retry_after, self.timeout_hold = retry_after, hold
        self.batch_not_implemented = not_implemented
        if "seed" in body:
            self.fault_rng.seed(f"{body['seed']}:faults")

    def faults_json(self) -> dict[str, Any]:
        return {
            "rates": self.rates,
            "next": {k: v for k, v in self.next.items() if v},
            "retry_after": self.retry_after,
            "timeout_hold": self.timeout_hold,
            "batch_not_implemented": sorted(self.batch_not_implemented),
        }

    def stats_json(self) -> dict[str, Any]:
        total: Counter[str] = Counter()
        for counts in self.faults_by_provider.values():
            total.update(counts)
        now = time.time()
        return {
            "calls": {p: dict(c) for p, c in self.calls.items()},
            "batch_ids": dict(self.batch_ids),
            "faults": dict(total),
            "faults_by_provider": {p: dict(c) for p, c in self.faults_by_provider.items()},
            "unauthorized": dict(self.unauthorized),
            "callbacks": self.sender.stats.to_json(),
            "files": dict(self.files),
            "tasks": {
                "total": len(self.tasks),
                "finished": sum(t.finished(now) for t in self.tasks.values()),
            },
        }
