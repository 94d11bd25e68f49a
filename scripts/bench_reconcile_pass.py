"""Reconciler pass benchmark: one manual pass against the fake upstream, and server memory.

Not a test. Starts ``scripts/fake_upstream.py`` as a child process on
127.0.0.1 with a fixed ``--latency`` per upstream call, creates ``--due``
finished tasks there, and times ONE ``run_pass(ignore_schedule=True)`` per
configuration, each in a process of its own (``bench_reconcile_worker.py``)
on a fresh temporary database with the same ids registered, with the real
httpx clients of ``server.providers.build_clients``. It prints the upstream
calls per provider (from the fake's ``/_fake/stats``) next to
``ceil(due / batch)``, the pass time next to the model ``calls x latency /
concurrency``, and the CPU the pass used (the whole process, and the event
loop's thread apart) per task; at the end a markdown table of every run.

Configurations, all in the same run against the same fake:
``--before`` the pass as it ran before pipelining (``run_pass(pipeline=False)``:
a provider's next call waits until the previous answers are settled);
``--checkout DIR`` (repeatable) the pass of another checkout's ``server/``,
e.g. ``--checkout /work/main``; ``--runs N`` each configuration N times,
interleaved (the machine may be shared: compare CPU per task first).

With ``--big N`` the same pass is timed again on a database of N tasks (the
due ones plus finished rows), and with ``--memory`` the real server is started
on that big database and its resident memory read (``bench_reconcile_memory.py``).
Everything stops by itself. ``BENCH_WRAP`` (environment): arguments put
before the worker script on its command line, e.g. a profiler's.

    python scripts/bench_reconcile_pass.py --due 5000 --latency 0.05
    python scripts/bench_reconcile_pass.py --due 15000 --providers acedata --latency 0.05 --before
    python scripts/bench_reconcile_pass.py --due 15000 --providers acedata --checkout /work/main
    python scripts/bench_reconcile_pass.py --due 50000 --providers acedata --big 1000000 --memory
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench_reconcile_worker import ACE_TOKEN, S2_KEY, settings_for  # noqa: E402

ACEDATA = ("seedream", "seedance", "dreamina")
#: Calls in flight per provider in a pass: AceData batches of one provider are sent one
#: after another (each as soon as the previous one answered, while earlier answers are
#: settled); Seedance 2.0 sends the single calls of one chunk with
#: ``Seedance2Client.concurrency`` (4) at once. Providers run concurrently, so a pass
#: takes as long as its slowest provider.
S2_CONCURRENCY = 4
CREATE_CHUNK = 5000
BATCH = 50  # RECONCILE_BATCH_SIZE's default


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

    def cpu(self) -> float:
        """CPU seconds the fake has used so far (it competes with the pass for the CPUs)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

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


@dataclass
class Run:
    """One timed pass: what the worker measured, and what the fake saw meanwhile."""

    label: str
    result: dict[str, Any]
    calls: dict[str, int]
    fake_cpu: float
    load: float


def timed_pass(
    fake: FakeProcess, db: Path, tasks_file: Path, label: str, root: Path, pipeline: bool = True
) -> Run:
    """One pass of ``root``'s server in a worker process, on a fresh database ``db``."""
    before, fake_cpu = fake.stats()["calls"], fake.cpu()
    # BENCH_WRAP: arguments run before the worker script, e.g. a profiler's module path.
    wrap = os.environ.get("BENCH_WRAP", "").split()
    cmd = [sys.executable, *wrap, str(ROOT / "scripts" / "bench_reconcile_worker.py")]
    cmd += ["--root", str(root), "--db", str(db), "--fake-url", fake.url]
    cmd += ["--tasks", str(tasks_file)] + ([] if pipeline else ["--no-pipeline"])
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{label}: the worker failed:\n{done.stderr[-4000:]}")
    if wrap:
        sys.stderr.write(done.stderr[-3000:])  # what the wrapper reported
    result = json.loads(done.stdout.strip().splitlines()[-1])
    after = fake.stats()["calls"]
    calls = {
        p: sum(after.get(p, {}).values()) - sum(before.get(p, {}).values())
        for p in result["providers"]
    }
    return Run(label, result, calls, fake.cpu() - fake_cpu, os.getloadavg()[0])


def model_seconds(provider: str, due: int, batch: int, latency: float) -> tuple[int, float]:
    """Expected calls and seconds of one provider's share of a pass."""
    if provider == "seedance2":
        rounds = sum(math.ceil(min(batch, due - s) / S2_CONCURRENCY) for s in range(0, due, batch))
        return due, rounds * latency
    calls = math.ceil(due / batch)
    return calls, calls * latency


def worst_model(run: Run, latency: float) -> float:
    return max(
        (model_seconds(p, r["due"], BATCH, latency)[1] for p, r in run.result["providers"].items()),
        default=0.0,
    )


def print_pass(run: Run, latency: float) -> None:
    res, due = run.result, sum(r["due"] for r in run.result["providers"].values())
    errors = {p: r["errors"] for p, r in res["providers"].items() if r["errors"]}
    print(
        f"\n== {run.label}: pass {res['duration']:.2f}s, CPU {res['cpu']:.2f}s "
        f"({per_task(res['cpu'], due)} us/task; event loop {per_task(res['loop_cpu'], due)}), "
        f"fake {run.fake_cpu:.2f}s, load average {run.load:.1f}; "
        f"unfinished after it: {res['left']}, errors: {errors or 'none'}"
    )
    print(
        f"{'provider':<10} {'due':>6} {'checked':>7} {'calls':>6} {'expected':>8} "
        f"{'time s':>7} {'model s':>7} {'ratio':>5}"
    )
    for provider, rep in res["providers"].items():
        if not rep["due"]:
            continue
        expected, model = model_seconds(provider, rep["due"], BATCH, latency)
        took = res["per_provider"].get(provider, 0.0)
        print(
            f"{provider:<10} {rep['due']:>6} {rep['checked']:>7} {run.calls[provider]:>6} "
            f"{expected:>8} {took:>7.2f} {model:>7.2f} {_ratio(took, model):>5}"
        )
    model = worst_model(run, latency)
    print(
        f"whole pass {res['duration']:.2f}s vs model {model:.2f}s (slowest provider): "
        f"ratio {_ratio(res['duration'], model)} (target <= 1.2)"
    )


def per_task(seconds: float, due: int) -> str:
    return f"{seconds / due * 1e6:.0f}" if due else "n/a"


def _ratio(measured: float, model: float) -> str:
    return f"{measured / model:.2f}" if model > 0 else "n/a"


def markdown(runs: list[Run], latency: float) -> None:
    """Every run as the rows of one markdown table (ready for the README)."""
    print(
        "\n| run | pass s | model s | ratio | CPU s | CPU µs/task (event loop) "
        "| calls (expected) | unfinished | load |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for run in runs:
        res = run.result
        due = sum(r["due"] for r in res["providers"].values())
        calls = ", ".join(
            f"{run.calls[p]} ({model_seconds(p, r['due'], BATCH, latency)[0]})"
            for p, r in res["providers"].items()
            if r["due"]
        )
        print(
            f"| {run.label} | {res['duration']:.2f} | {worst_model(run, latency):.2f} "
            f"| {_ratio(res['duration'], worst_model(run, latency))} | {res['cpu']:.2f} "
            f"| {per_task(res['cpu'], due)} ({per_task(res['loop_cpu'], due)}) | {calls} "
            f"| {res['left']} | {run.load:.1f} |"
        )


def configurations(args: argparse.Namespace) -> list[tuple[str, Path, bool]]:
    """(label, checkout, pipelined) of each pass to time, in the order they run."""
    configs = [("not pipelined", ROOT, False)] if args.before else []
    configs += [(f"checkout {Path(c).name or c}", Path(c), True) for c in args.checkout]
    return configs + [("this checkout", ROOT, True)]


def run(args: argparse.Namespace) -> None:
    providers = list(ACEDATA) if args.providers == "acedata" else [*ACEDATA, "seedance2"]
    print(
        f"machine: {platform.node()} {platform.machine()} {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}"
    )
    print(
        f"due {args.due} over {', '.join(providers)}; latency {args.latency * 1000:.0f} ms "
        f"per call; batch {BATCH}; Seedance 2.0 concurrency {S2_CONCURRENCY}; AceData "
        "batches one call at a time per provider, settled behind the calls"
    )
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="taskhook-benchpass-") as tmp_name:
        tmp = Path(tmp_name)
        fake = FakeProcess(args.latency, tmp)
        try:
            started = time.perf_counter()
            tasks = fake.create(providers, args.due)
            tasks_file = tmp / "tasks.json"
            tasks_file.write_text(json.dumps(tasks))
            print(
                f"{len(tasks)} finished tasks created in the fake in "
                f"{time.perf_counter() - started:.1f}s"
            )
            for n in range(args.runs):
                for label, root, pipeline in configurations(args):
                    name = f"{label}, run {n + 1}" if args.runs > 1 else label
                    db = tmp / f"pass-{len(runs)}.db"
                    runs.append(timed_pass(fake, db, tasks_file, name, root, pipeline))
                    print_pass(runs[-1], args.latency)
                    db.unlink()
            if args.big:
                big_run(args, fake, tmp, tasks, tasks_file, providers, runs)
        finally:
            fake.stop()
    markdown(runs, args.latency)


def big_run(
    args: argparse.Namespace,
    fake: FakeProcess,
    tmp: Path,
    tasks: list[tuple[str, str]],
    tasks_file: Path,
    providers: Sequence[str],
    runs: list[Run],
) -> None:
    """The same pass on a database of ``--big`` tasks; then, with ``--memory``, the server."""
    import asyncio

    from bench_reconcile_memory import fill_finished, memory_check

    big = settings_for(tmp / "big.db", fake.url)
    started = time.perf_counter()
    asyncio.run(fill_finished(big, args.big - args.due, providers))
    print(
        f"\nbig database: {args.big} tasks ({args.big - args.due} finished) built in "
        f"{time.perf_counter() - started:.1f}s, {big.database_path.stat().st_size / 1e6:.0f} MB"
    )
    small = runs[-1]
    runs.append(timed_pass(fake, big.database_path, tasks_file, f"{args.big} tasks", ROOT))
    print_pass(runs[-1], args.latency)
    growth = runs[-1].result["duration"] / small.result["duration"]
    print(f"\nbig / small pass time: {growth:.2f} (target <= 1.1)")
    if args.memory:
        memory_check(big.database_path, tasks, args.requests)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--due", type=int, default=5000, help="unfinished tasks in the pass")
    p.add_argument("--latency", type=float, default=0.05, help="seconds per upstream call")
    p.add_argument("--providers", choices=("all", "acedata"), default="all")
    p.add_argument("--before", action="store_true", help="also time the pass without pipelining")
    p.add_argument(
        "--checkout", action="append", default=[], help="also time this checkout's server/"
    )
    p.add_argument("--runs", type=int, default=1, help="time each configuration this often")
    p.add_argument("--big", type=int, default=0, help="also time a database of this many tasks")
    p.add_argument("--memory", action="store_true", help="server RSS on the big database")
    p.add_argument("--requests", type=int, default=400, help="API calls for --memory")
    args = p.parse_args(argv)
    if args.big and args.big < args.due:
        p.error("--big must be at least --due")
    if args.memory and not args.big:
        p.error("--memory needs --big")
    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
