"""Ingest benchmark: taskhook's durable callback path against bare-ack baselines.

Not a test. One run starts three servers under the same uvicorn settings, pinned
to one CPU:

* ``bare`` - a minimal Starlette app whose POST handler reads the body,
  parses it as JSON and answers 200 without storing anything, uvicorn's
  access log off and no logging configured (the ceiling issue 18 measures
  against);
* ``logged`` - the same app with taskhook's logging and uvicorn's access
  line for every request (what per-request logging costs);
* ``taskhook`` - ``python -m server serve`` on a fresh temporary database
  (RECONCILER=off, ARCHIVE=off, SQLITE_SYNCHRONOUS as asked);

and drives them all, from another CPU, with the same load: ~1.5 KB SeeDance
callback bodies, a distinct task id per request, at each connection count,
alternating the baselines and taskhook. It prints requests/s and p50/p99
latency for each and taskhook's ratios to each baseline, then stops taskhook
and checks that every callback it acknowledged with 200 is in the database.
It also reads each server's CPU time (user + system, every thread, from
``/proc``) around each run and prints it per answered request: when other
work shares the machine, CPU per request is much steadier than requests/s,
and ``bare CPU ÷ CPU`` is the throughput ratio a CPU-bound server reaches
when it has its core to itself.
``--before CHECKOUT`` adds a fourth server, taskhook from another checkout,
so a change is measured against its parent in the same run.

The load generator is ``wrk`` (with a Lua script that varies the task id) when
installed, else an asyncio httpx driver; the output says which
(``scripts/bench_load.py``). Traffic goes only to 127.0.0.1, and every run is
bounded in time. The summary is a markdown table, ready for the README.

    python scripts/bench_ingest.py --seconds 4 --rounds 2 --before /tmp/parent
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scripts.bench_load import (  # noqa: E402
    CALLBACK_SECRET,
    PROVIDER,
    Result,
    body_template,
    cpu_seconds,
    free_port,
    pinned,
    run_httpx,
    run_wrk,
    stop,
    wait_listening,
    write_wrk_script,
)
from server.core.tokens import callback_token  # noqa: E402

# -- the baseline server ------------------------------------------------------


def serve_baseline(port: int, logged: bool) -> None:
    """The bare-ack app under the same uvicorn settings as ``server.cli.serve``.

    ``logged``: taskhook's log set-up and uvicorn's access line per request;
    otherwise the access log is off and nothing else logs per request.
    """
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from server.observe import logs

    async def ack(request: Request) -> JSONResponse:
        payload = json.loads(await request.body())
        return JSONResponse({"ok": True, "task_id": payload.get("task_id"), "status": "succeeded"})

    app = Starlette(routes=[Route("/callbacks/{provider}/{token}", ack, methods=["POST"])])
    if logged:
        logs.configure("text")
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        log_config=None,
        access_log=logged,
        timeout_graceful_shutdown=20,
    )


@dataclass
class Target:
    name: str
    port: int
    proc: subprocess.Popen
    path: str
    db: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"


def start_baseline(cpu: int | None, log_file, logged: bool) -> Target:
    port = free_port()
    argv = [sys.executable, str(Path(__file__).resolve()), "--serve-baseline", str(port)]
    if logged:
        argv.append("--baseline-logged")
    proc = subprocess.Popen(pinned(cpu, argv), cwd=ROOT, stdout=log_file, stderr=log_file)
    wait_listening(port, proc)
    return Target("logged" if logged else "bare", port, proc, f"/callbacks/{PROVIDER}/bench")


def start_taskhook(
    cpu: int | None, workdir: Path, synchronous: str, log_file, checkout: Path = ROOT
) -> Target:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ACEDATA", "SEEDANCE2"))}
    env.update(
        DATABASE_URL=f"sqlite:///{workdir / 'bench.db'}",
        HOST="127.0.0.1",
        PORT=str(port),
        API_TOKEN="bench-api-token",
        CALLBACK_SECRETS=CALLBACK_SECRET,
        RECONCILER="off",
        ARCHIVE="off",
        SQLITE_SYNCHRONOUS=synchronous,
    )
    argv = [sys.executable, "-m", "server", "serve"]
    proc = subprocess.Popen(
        pinned(cpu, argv), cwd=checkout, env=env, stdout=log_file, stderr=log_file
    )
    wait_listening(port, proc)
    path = f"/callbacks/{PROVIDER}/{callback_token(CALLBACK_SECRET, PROVIDER)}"
    return Target("taskhook", port, proc, path, workdir / "bench.db")


# -- the run ------------------------------------------------------------------


def count_rows(db: Path) -> tuple[int, int]:
    conn = sqlite3.connect(db)
    try:
        tasks = conn.execute("SELECT count(*) FROM tasks").fetchone()[0]
        deliveries = conn.execute("SELECT count(*) FROM deliveries").fetchone()[0]
    finally:
        conn.close()
    return tasks, deliveries


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--seconds", type=int, default=5, help="length of each measured run")
    p.add_argument("--connections", default="16,64", help="comma-separated connection counts")
    p.add_argument("--rounds", type=int, default=2, help="alternations of all servers")
    p.add_argument("--synchronous", choices=("full", "normal"), default="full")
    p.add_argument("--driver", choices=("auto", "wrk", "httpx"), default="auto")
    p.add_argument("--server-cpu", type=int, default=0)
    p.add_argument("--load-cpu", type=int, default=1)
    p.add_argument(
        "--before",
        metavar="CHECKOUT",
        help="also run taskhook from this other checkout (e.g. a worktree of main) in the same run",
    )
    p.add_argument("--serve-baseline", type=int, help=argparse.SUPPRESS)
    p.add_argument("--baseline-logged", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args(argv)


Results = dict[tuple[str, int], list[Result]]


def med(rs: list[Result], attr: str) -> float:
    return statistics.median(getattr(r, attr) for r in rs)


def table(results: Results, names: list[str], counts: list[int]) -> list[str]:
    """The summary as a markdown table: medians of the rounds, ratios within the same run."""
    before = "before" in names
    head = "| conns | bare req/s | logged req/s | taskhook req/s | ÷ bare | p99 ÷ bare"
    head += " | ÷ logged | p99 ÷ logged |" + (" before req/s | before ÷ bare |" if before else "")
    cpu_names = " / ".join(names)
    head += f" CPU µs/req {cpu_names} | bare CPU ÷ taskhook CPU |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for c in counts:
        rps = {n: med(results[(n, c)], "rps") for n in names}
        p99 = {n: med(results[(n, c)], "p99_ms") for n in names}
        cpu = {n: med(results[(n, c)], "cpu_us") for n in names}
        cells = [str(c), *(f"{rps[n]:.0f}" for n in ("bare", "logged", "taskhook"))]
        for base in ("bare", "logged"):
            cells += [f"{rps['taskhook'] / rps[base]:.2f}", f"{p99['taskhook'] / p99[base]:.2f}"]
        if before:
            cells += [f"{rps['before']:.0f}", f"{rps['before'] / rps['bare']:.2f}"]
        cells.append(" / ".join(f"{cpu[n]:.0f}" for n in names))
        cells.append(f"{cpu['bare'] / cpu['taskhook']:.2f}" if cpu["taskhook"] else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def start_servers(args: argparse.Namespace, workdir: Path, log_file) -> list[Target]:
    """bare, logged, taskhook (and before); if one fails to start, the others are stopped."""
    targets: list[Target] = []
    try:
        targets.append(start_baseline(args.server_cpu, log_file, logged=False))
        targets.append(start_baseline(args.server_cpu, log_file, logged=True))
        targets.append(start_taskhook(args.server_cpu, workdir, args.synchronous, log_file))
        if args.before:
            (workdir / "before").mkdir()
            checkout = Path(args.before)
            before = start_taskhook(
                args.server_cpu, workdir / "before", args.synchronous, log_file, checkout
            )
            before.name = "before"
            targets.append(before)
    except BaseException:
        for target in targets:
            stop(target.proc)
        raise
    return targets


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve_baseline:
        serve_baseline(args.serve_baseline, args.baseline_logged)
        return 0
    driver = args.driver
    if driver == "auto":
        driver = "wrk" if shutil.which("wrk") else "httpx"
    counts = [int(c) for c in args.connections.split(",")]
    print(
        f"load generator: {driver}; body {len(body_template())} bytes; "
        f"server CPU {args.server_cpu}, load CPU {args.load_cpu}; "
        f"SQLITE_SYNCHRONOUS={args.synchronous}; {args.seconds}s per run, {args.rounds} rounds"
    )
    with tempfile.TemporaryDirectory(prefix="taskhook-bench-") as tmp:
        workdir = Path(tmp)
        log_file = open(workdir / "servers.log", "ab")  # noqa: SIM115 - closed below
        script = write_wrk_script(workdir) if driver == "wrk" else None
        targets = start_servers(args, workdir, log_file)
        stores = [t for t in targets if t.db is not None]
        acked = {t.name: 0 for t in stores}
        results: Results = {}
        run_number = 0

        def load(target: Target, connections: int, seconds: float) -> Result:
            nonlocal run_number
            run_number += 1
            prefix = f"r{run_number}"
            used = cpu_seconds(target.proc.pid)
            on_loop = cpu_seconds(target.proc.pid, main_thread=True)
            if script is not None:
                result = run_wrk(target, connections, seconds, args.load_cpu, script, prefix)
            else:
                result = run_httpx(target, connections, seconds, args.load_cpu, prefix)
            used = cpu_seconds(target.proc.pid) - used
            on_loop = cpu_seconds(target.proc.pid, main_thread=True) - on_loop
            result.cpu_us = used / max(1, result.requests) * 1e6
            result.loop_cpu_us = on_loop / max(1, result.requests) * 1e6
            if target.db is not None:
                acked[target.name] += result.ok
            return result

        try:
            for target in targets:  # warm up all (imports, caches, the db file)
                load(target, counts[0], 1.0)
            for connections in counts:
                for _ in range(args.rounds):
                    for target in targets:
                        result = load(target, connections, args.seconds)
                        results.setdefault((target.name, connections), []).append(result)
                        print(
                            f"  {target.name:<8} c={connections:<3} {result.rps:8.0f} req/s"
                            f"  p50 {result.p50_ms:7.2f} ms  p99 {result.p99_ms:7.2f} ms"
                            f"  ok {result.ok} errors {result.errors}"
                            f"  server CPU {result.cpu_us:5.0f} µs/request"
                            f" (event loop {result.loop_cpu_us:3.0f})",
                            flush=True,
                        )
        finally:
            for target in targets:
                stop(target.proc)
            log_file.close()

        print("\nsummary (medians of the rounds; every ratio is between servers of this run):\n")
        print("\n".join(table(results, [t.name for t in targets], counts)))
        lost = False
        for target in stores:
            assert target.db is not None
            tasks, deliveries = count_rows(target.db)
            fine = tasks >= acked[target.name] and deliveries >= acked[target.name]
            lost = lost or not fine
            print(
                f"\ndurability ({target.name}): {acked[target.name]} callbacks acknowledged with"
                f" 200; the database holds {tasks} tasks and {deliveries} deliveries:"
                f" {'ok' if fine else 'LOST CALLBACKS'}"
            )
        return 1 if lost else 0


if __name__ == "__main__":
    sys.exit(main())
