"""Reconciler pass benchmark: one manual pass against the fake upstream, and server memory.

Not a test. Starts ``scripts/fake_upstream.py`` as a child process on
127.0.0.1 with a fixed ``--latency`` per upstream call, creates ``--due``
finished tasks there, registers the same ids in a fresh temporary database
and times ONE ``run_pass(ignore_schedule=True)`` with the real httpx clients
of ``server.providers.build_clients``. It prints the upstream calls per
provider (from the fake's ``/_fake/stats``) next to ``ceil(due / batch)``
and the pass time next to the model ``calls x latency / concurrency``.

With ``--before`` the pass is first timed the way passes ran before they were
pipelined (``run_pass(pipeline=False)``: a provider's next call waits until the
previous answers are settled), on its own fresh database, in the same run.

With ``--big N`` the same pass is timed again on a database of N tasks (the
due ones plus finished rows), and with ``--memory`` the real server
(``python -m server serve``, RECONCILER=off, ARCHIVE=off) is started on that
big database, sent a few hundred API reads and callbacks, and its VmRSS and
VmHWM are read from /proc. Everything stops by itself.

    python scripts/bench_reconcile_pass.py --due 5000 --latency 0.05
    python scripts/bench_reconcile_pass.py --due 15000 --providers acedata --latency 0.05 --before
    python scripts/bench_reconcile_pass.py --due 50000 --providers acedata --big 1000000 --memory
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import platform
import random
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from server.core.codec import state_to_dict  # noqa: E402
from server.core.ids import task_key  # noqa: E402
from server.core.tokens import callback_token  # noqa: E402
from server.core.types import Status, TaskState  # noqa: E402
from server.providers import build_clients, upstream  # noqa: E402
from server.reconcile.reconciler import run_pass  # noqa: E402
from server.reconcile.report import PassReport  # noqa: E402
from server.settings import Settings  # noqa: E402
from server.store import Registration  # noqa: E402
from server.store.sqlite.store import SQLiteStore as Store  # noqa: E402
from server.store.sqlite.writes import _dumps  # noqa: E402
from tests.harness import API_TOKEN, CALLBACK_SECRET, ServerProcess  # noqa: E402
from tests.payloads import dumps, seedance  # noqa: E402

ACEDATA = ("seedream", "seedance", "dreamina")
ACE_TOKEN, S2_KEY = "bench-acedata-token", "bench-seedance2-key"
#: Calls in flight per provider in a pass: AceData batches of one provider are sent one
#: after another (the next goes out when the previous answers are in, and is in flight
#: while they are settled); Seedance 2.0 sends the single calls of one chunk with
#: ``Seedance2Client.concurrency`` (4) at once. Providers run concurrently, so a pass
#: takes as long as its slowest provider.
S2_CONCURRENCY = 4
CREATE_CHUNK = 5000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FakeProcess:
    """``scripts/fake_upstream.py`` in a child process, so its CPU is not the pass's."""

    def __init__(self, latency: float, log_dir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(log_dir / "fake.log", "ab")  # noqa: SIM115 - closed in stop()
        cmd = [sys.executable, str(ROOT / "scripts" / "fake_upstream.py"), "--port", str(self.port)]
        cmd += [
            "--latency",
            str(latency),
            "--tick",
            "3600",
            "--seed",
            "7",
            "--log-level",
            "warning",
        ]
        cmd += ["--acedata-token", ACE_TOKEN, "--seedance2-key", S2_KEY]
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(f"{self.url}/_fake/stats", timeout=1).raise_for_status()
                return
            except httpx.HTTPError as exc:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    message = f"fake upstream did not start; see {log_dir}/fake.log"
                    raise RuntimeError(message) from exc
                time.sleep(0.1)

    def stats(self) -> dict[str, Any]:
        return httpx.get(f"{self.url}/_fake/stats", timeout=30).json()

    def create(self, providers: Sequence[str], count: int) -> list[tuple[str, str]]:
        """``count`` tasks spread evenly over ``providers``, already finished (9 in 10 succeed)."""
        specs = [
            {
                "provider": providers[n % len(providers)],
                "finish_after": 0,
                "outcome": "failed" if n % 10 == 9 else "succeeded",
            }
            for n in range(count)
        ]
        made: list[tuple[str, str]] = []
        for start in range(0, count, CREATE_CHUNK):
            body = {"tasks": specs[start : start + CREATE_CHUNK]}
            response = httpx.post(f"{self.url}/_fake/tasks", json=body, timeout=120)
            response.raise_for_status()
            made += [(t["provider"], t["task_id"]) for t in response.json()["tasks"]]
        return made

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def settings_for(db: Path, fake_url: str) -> Settings:
    return Settings(
        database_url=f"sqlite:///{db}",
        callback_secrets=(CALLBACK_SECRET,),
        api_token=API_TOKEN,
        reconciler="off",
        archive=False,
        acedata_api_token=ACE_TOKEN,
        acedata_base_url=fake_url,
        seedance2_api_key=S2_KEY,
        seedance2_base_url=fake_url,
    )


async def fill_finished(settings: Settings, rows: int, provider_of: Sequence[str]) -> None:
    """``rows`` finished tasks, inserted straight into the schema ``Store.open`` made."""
    async with Store(settings):
        pass  # creates the file and applies the migrations
    now = time.time()
    conn = sqlite3.connect(settings.database_path)
    templates = {
        p: _dumps(state_to_dict(TaskState("@ID@", p, Status.SUCCEEDED, "succeeded")))
        for p in provider_of
    }

    def rows_of() -> Any:
        for n in range(rows):
            provider, task_id = provider_of[n % len(provider_of)], f"done-{n:09d}"
            created = now - 86400 * 30 + n * (86400 * 30 / rows)
            state = templates[provider].replace("@ID@", task_id)
            yield (task_key(task_id), task_id, provider, "succeeded", state, created, created + 60)

    try:
        with conn:
            conn.executemany(
                "INSERT INTO tasks (key, task_id, provider, status, state, created_at,"
                " updated_at, completed_at, deliveries, final_source)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?7, 1, 'callback')",
                rows_of(),
            )
        conn.execute("ANALYZE")
    finally:
        conn.close()


async def register_due(settings: Settings, tasks: list[tuple[str, str]]) -> None:
    async with Store(settings) as store:
        for start in range(0, len(tasks), 1000):
            chunk = tasks[start : start + 1000]
            await store.register([Registration(p, t) for p, t in chunk])


async def one_pass(
    settings: Settings, fake: FakeProcess, due: int, pipeline: bool = True
) -> tuple[PassReport, dict]:
    before = fake.stats()["calls"]
    last_answer: dict[str, float] = {}
    cpu_started = time.process_time()
    started = time.perf_counter()

    def progress(provider: str, checked: int, total: int) -> None:
        last_answer[provider] = time.perf_counter() - started

    async with Store(settings) as store, upstream.default_http_client() as http:
        clients = build_clients(settings, http)
        report = await run_pass(
            store,
            clients,
            settings,
            ignore_schedule=True,
            limit=due,
            progress=progress,
            pipeline=pipeline,
        )
        cpu = time.process_time() - cpu_started  # this process, every thread (writer included)
        unfinished = await store.due_tasks(time.time(), 10, ignore_schedule=True)
    after = fake.stats()["calls"]
    calls = {
        p: sum(after.get(p, {}).values()) - sum(before.get(p, {}).values())
        for p in report.providers
    }
    seen = {"calls": calls, "per_provider": last_answer, "left": len(unfinished), "cpu": cpu}
    return report, seen


def model_seconds(provider: str, due: int, batch: int, latency: float) -> tuple[int, float]:
    """Expected calls and seconds of one provider's share of a pass."""
    if provider == "seedance2":
        rounds = sum(math.ceil(min(batch, due - s) / S2_CONCURRENCY) for s in range(0, due, batch))
        return due, rounds * latency
    calls = math.ceil(due / batch)
    return calls, calls * latency


def print_pass(label: str, report: PassReport, seen: dict, batch: int, latency: float) -> float:
    errors = {p: dict(r.errors) for p, r in report.providers.items() if r.errors}
    print(
        f"\n== {label}: pass {report.duration:.2f}s (CPU {seen['cpu']:.2f}s in this process, "
        f"load average {os.getloadavg()[0]:.1f}), tasks still unfinished after it: "
        f"{seen['left']}, errors: {errors or 'none'}"
    )
    print(
        f"{'provider':<10} {'due':>6} {'checked':>7} {'calls':>6} {'expected':>8} "
        f"{'time s':>7} {'model s':>7} {'ratio':>5}"
    )
    worst_model = 0.0
    for provider, rep in report.providers.items():
        if not rep.due:
            continue
        expected, model = model_seconds(provider, rep.due, batch, latency)
        worst_model = max(worst_model, model)
        took = seen["per_provider"].get(provider, 0.0)
        print(
            f"{provider:<10} {rep.due:>6} {rep.checked:>7} {seen['calls'][provider]:>6} "
            f"{expected:>8} {took:>7.2f} {model:>7.2f} {_ratio(took, model):>5}"
        )
    ratio = _ratio(report.duration, worst_model)
    print(
        f"whole pass {report.duration:.2f}s vs model {worst_model:.2f}s (slowest provider): "
        f"ratio {ratio} (target <= 1.2)"
    )
    return report.duration


def _ratio(measured: float, model: float) -> str:
    return f"{measured / model:.2f}" if model > 0 else "n/a"


def memory_check(db: Path, due_ids: list[tuple[str, str]], requests: int) -> None:
    """The real server on ``db``: API reads and callbacks, then its resident memory."""
    server = ServerProcess(db, env={"LOG_LEVEL": "warning"}).start()
    try:
        pid = server.proc.pid
        rss_start = read_status(pid)
        headers = {"authorization": f"Bearer {API_TOKEN}"}
        rng = random.Random(3)
        ace = [t for p, t in due_ids if p == "seedance"]
        started = time.perf_counter()
        with httpx.Client(base_url=server.url, headers=headers, timeout=30) as client:
            for n in range(requests):
                kind = n % 4
                if kind == 0:
                    r = client.get("/tasks", params={"limit": 100})
                elif kind == 1:
                    r = client.get(f"/tasks/done-{rng.randrange(1_000):09d}")
                elif kind == 2:
                    r = client.get("/tasks", params={"status": "succeeded", "limit": 50})
                else:
                    task_id = ace[n % len(ace)] if ace else None
                    path = f"/callbacks/seedance/{callback_token(CALLBACK_SECRET, 'seedance')}"
                    r = client.post(path, content=dumps(seedance(task_id)))
                if r.status_code >= 400 and r.status_code != 404:
                    raise RuntimeError(f"{r.request.method} {r.request.url.path}: {r.status_code}")
            client.get("/metrics")
            client.get("/readyz")
        took = time.perf_counter() - started
        rss_end = read_status(pid)
        print(
            f"\n== server memory ({db.stat().st_size / 1e6:.0f} MB database), pid {pid}: "
            f"{requests} requests in {took:.1f}s"
        )
        print(f"after start  VmRSS {rss_start['VmRSS']}, VmHWM {rss_start['VmHWM']}")
        print(f"after load   VmRSS {rss_end['VmRSS']}, VmHWM {rss_end['VmHWM']} (target < 100 MB)")
    finally:
        server.stop()


def read_status(pid: int) -> dict[str, str]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = value.strip()
    return fields


async def run(args: argparse.Namespace) -> None:
    providers = list(ACEDATA) if args.providers == "acedata" else [*ACEDATA, "seedance2"]
    print(
        f"machine: {platform.node()} {platform.machine()} {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}"
    )
    print(
        f"due {args.due} over {', '.join(providers)}; latency {args.latency * 1000:.0f} ms "
        f"per call; batch {Settings().reconcile_batch_size}; Seedance 2.0 concurrency "
        f"{S2_CONCURRENCY}; AceData batches one at a time per provider, the next sent "
        "while the previous answers are settled"
    )
    with tempfile.TemporaryDirectory(prefix="taskhook-benchpass-") as tmp_name:
        tmp = Path(tmp_name)
        fake = FakeProcess(args.latency, tmp)
        try:
            started = time.perf_counter()
            tasks = fake.create(providers, args.due)
            print(
                f"{len(tasks)} finished tasks created in the fake in "
                f"{time.perf_counter() - started:.1f}s"
            )
            small = settings_for(tmp / "small.db", fake.url)
            batch = small.reconcile_batch_size
            if args.before:
                serial = settings_for(tmp / "serial.db", fake.url)
                await register_due(serial, tasks)
                report, seen = await one_pass(serial, fake, args.due, pipeline=False)
                print_pass(
                    f"before: not pipelined, small database ({args.due} tasks)",
                    report,
                    seen,
                    batch,
                    args.latency,
                )
            await register_due(small, tasks)
            report, seen = await one_pass(small, fake, args.due)
            small_time = print_pass(
                f"small database ({args.due} tasks)", report, seen, batch, args.latency
            )
            if args.big:
                big = settings_for(tmp / "big.db", fake.url)
                started = time.perf_counter()
                await fill_finished(big, args.big - args.due, providers)
                await register_due(big, tasks)
                print(
                    f"\nbig database: {args.big} tasks ({args.big - args.due} finished) built in "
                    f"{time.perf_counter() - started:.1f}s, "
                    f"{big.database_path.stat().st_size / 1e6:.0f} MB"
                )
                report, seen = await one_pass(big, fake, args.due)
                big_time = print_pass(
                    f"big database ({args.big} tasks)", report, seen, batch, args.latency
                )
                print(f"\nbig / small pass time: {big_time / small_time:.2f} (target <= 1.5)")
                if args.memory:
                    memory_check(big.database_path, tasks, args.requests)
        finally:
            fake.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--due", type=int, default=5000, help="unfinished tasks in the pass")
    p.add_argument("--latency", type=float, default=0.05, help="seconds per upstream call")
    p.add_argument("--providers", choices=("all", "acedata"), default="all")
    p.add_argument("--before", action="store_true", help="first time the pass without pipelining")
    p.add_argument("--big", type=int, default=0, help="also time a database of this many tasks")
    p.add_argument("--memory", action="store_true", help="server RSS on the big database")
    p.add_argument("--requests", type=int, default=400, help="API calls for --memory")
    args = p.parse_args(argv)
    if args.big and args.big < args.due:
        p.error("--big must be at least --due")
    if args.memory and not args.big:
        p.error("--memory needs --big")
    asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
