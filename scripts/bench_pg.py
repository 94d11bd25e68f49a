"""PostgreSQL benchmark: durable callbacks/s and p99 with one and two replicas, against SQLite.

Not a test. One run starts, on this machine:

* ``sqlite`` - ``python -m server serve`` on a fresh SQLite file
  (SQLITE_SYNCHRONOUS=full, the default);
* ``pg-1`` - one ``python -m server serve`` on a fresh PostgreSQL database;
* ``pg-2`` - two of them on another fresh PostgreSQL database (two replicas,
  each taking half the connections);

all with RECONCILER=off and ARCHIVE=off, and drives them in turn, alternating,
with the load of ``scripts/bench_ingest.py`` (~1.5 KB SeeDance callbacks, a
distinct task id per request, ``wrk`` when installed, else an httpx driver).
A 200 is a durable callback: its COMMIT returned (``synchronous_commit`` on,
SQLite ``synchronous=full``). It prints callbacks/s and p50/p99 per target and
connection count, the ratios to SQLite from the same run, and finally checks
that every acknowledged callback is in its database.

For two replicas the connections are split between two load generators run
at once; their rates add up and the worse p99 is reported. The taskhook
servers share one CPU (``--server-cpu``), the load generators another; the
PostgreSQL server runs wherever the OS puts it. The scratch databases are
dropped at the end. Only 127.0.0.1 is contacted; each run is bounded in time.

    python scripts/bench_pg.py --seconds 5 --connections 16,64 --rounds 2
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402

from scripts.bench_load import (  # noqa: E402
    CALLBACK_SECRET,
    PROVIDER,
    WRK_SCRIPT,
    Result,
    body_template,
    free_port,
    pinned,
    run_httpx,
    run_wrk,
    stop,
    wait_listening,
)
from server.core.ids import task_key  # noqa: E402
from server.core.tokens import callback_token  # noqa: E402

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


@dataclass
class Server:
    port: int
    proc: subprocess.Popen[bytes]
    path: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"


def start_server(cpu: int | None, database_url: str, workdir: Path, log_file) -> Server:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ACEDATA", "SEEDANCE2"))}
    env.update(
        DATABASE_URL=database_url,
        HOST="127.0.0.1",
        PORT=str(port),
        API_TOKEN="bench-api-token",
        CALLBACK_SECRETS=CALLBACK_SECRET,
        RECONCILER="off",
        ARCHIVE="off",
        PYTHONPATH=str(ROOT),
    )
    argv = [sys.executable, "-m", "server", "serve"]
    proc = subprocess.Popen(
        pinned(cpu, argv), cwd=workdir, env=env, stdout=log_file, stderr=log_file
    )
    wait_listening(port, proc)
    path = f"/callbacks/{PROVIDER}/{callback_token(CALLBACK_SECRET, PROVIDER)}"
    return Server(port, proc, path)


@dataclass
class Target:
    name: str
    servers: list[Server]
    database_url: str


def with_database(url: str, name: str) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{name}"


#: The load's Lua script, also writing each acknowledged task id to $BENCH_ACK_DIR/<prefix>,
#: so the check at the end looks every acknowledged callback up, not just counts rows.
ACK_LOG = """
local ack_file = nil
local plain_response = response
function response(status, headers, body)
  plain_response(status, headers, body)
  if status ~= 200 then return end
  if ack_file == nil then ack_file = io.open(os.getenv("BENCH_ACK_DIR") .. "/" .. prefix, "a") end
  ack_file:write((body:match('"task_id"%s*:%s*"([^"]+)"') or "?") .. "\\n")
  ack_file:flush()
end
"""


def write_logging_script(workdir: Path) -> Path:
    script = workdir / "bench.lua"
    script.write_text(WRK_SCRIPT.replace("%TEMPLATE%", body_template()) + ACK_LOG)
    return script


def missing_acknowledged(database_url: str, acked_ids: set[str]) -> int:
    """How many of the acknowledged task ids the database does not hold."""
    keys = {task_key(i) for i in acked_ids}
    if database_url.startswith("sqlite:///"):
        conn = sqlite3.connect(database_url[len("sqlite:///") :])
        try:
            stored = {k for (k,) in conn.execute("SELECT key FROM tasks")}
        finally:
            conn.close()
    else:
        with psycopg.connect(database_url) as pg:
            stored = {k for (k,) in pg.execute("SELECT key FROM tasks")}
    return len(keys - stored)


def count_rows(database_url: str) -> tuple[int, int]:
    if database_url.startswith("sqlite:///"):
        conn = sqlite3.connect(database_url[len("sqlite:///") :])
        try:
            return (
                conn.execute("SELECT count(*) FROM tasks").fetchone()[0],
                conn.execute("SELECT count(*) FROM deliveries").fetchone()[0],
            )
        finally:
            conn.close()
    with psycopg.connect(database_url) as conn:
        tasks = conn.execute("SELECT count(*) FROM tasks").fetchone()
        deliveries = conn.execute("SELECT count(*) FROM deliveries").fetchone()
        return (tasks[0] if tasks else 0), (deliveries[0] if deliveries else 0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=int, default=5, help="length of each measured run")
    p.add_argument("--connections", default="16,64", help="comma-separated connection counts")
    p.add_argument("--rounds", type=int, default=2, help="alternations of the three targets")
    p.add_argument("--driver", choices=("auto", "wrk", "httpx"), default="auto")
    p.add_argument("--server-cpu", type=int, default=0)
    p.add_argument("--load-cpu", type=int, default=1)
    p.add_argument(
        "--postgres-url", default=os.environ.get("TASKHOOK_TEST_POSTGRES_URL") or DEFAULT_URL
    )
    args = p.parse_args(argv)
    driver = args.driver if args.driver != "auto" else ("wrk" if shutil.which("wrk") else "httpx")
    counts = [int(c) for c in args.connections.split(",")]

    admin = psycopg.connect(args.postgres_url, autocommit=True)
    made = [f"taskhook_bench_{uuid.uuid4().hex[:10]}" for _ in range(2)]
    for name in made:
        admin.execute(f'CREATE DATABASE "{name}"')
    sync = admin.execute("SHOW synchronous_commit").fetchone()
    print(
        f"load generator: {driver}; {args.seconds}s per run, {args.rounds} rounds;"
        f" server CPU {args.server_cpu}, load CPU {args.load_cpu};"
        f" PostgreSQL synchronous_commit={sync[0] if sync else '?'} (taskhook forces on)"
    )
    try:
        with tempfile.TemporaryDirectory(prefix="taskhook-bench-pg-") as tmp:
            return run(args, driver, counts, Path(tmp), made)
    finally:
        for name in made:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def run(args, driver: str, counts: list[int], workdir: Path, made: list[str]) -> int:
    log_file = open(workdir / "servers.log", "ab")  # noqa: SIM115 - closed below
    script = write_logging_script(workdir) if driver == "wrk" else None
    acks = workdir / "acked"
    acks.mkdir()
    os.environ["BENCH_ACK_DIR"] = str(acks)  # wrk inherits it
    sqlite_url = f"sqlite:///{workdir / 'bench.db'}"
    pg1_url, pg2_url = (with_database(args.postgres_url, name) for name in made)
    targets = [
        Target(
            "sqlite", [start_server(args.server_cpu, sqlite_url, workdir, log_file)], sqlite_url
        ),
        Target("pg-1", [start_server(args.server_cpu, pg1_url, workdir, log_file)], pg1_url),
        Target(
            "pg-2",
            [start_server(args.server_cpu, pg2_url, workdir, log_file) for _ in range(2)],
            pg2_url,
        ),
    ]
    acked = {t.name: 0 for t in targets}
    prefixes: dict[str, list[str]] = {t.name: [] for t in targets}
    results: dict[tuple[str, int], list[Result]] = {}
    run_number = 0

    def load_one(server: Server, connections: int, seconds: float, prefix: str) -> Result:
        if driver == "wrk":
            assert script is not None
            return run_wrk(server, connections, seconds, args.load_cpu, script, prefix)
        return run_httpx(server, connections, seconds, args.load_cpu, prefix)

    def load(target: Target, connections: int, seconds: float) -> Result:
        nonlocal run_number
        run_number += 1
        share = max(1, connections // len(target.servers))
        prefixes[target.name] += [f"r{run_number}s{i}" for i in range(len(target.servers))]
        with concurrent.futures.ThreadPoolExecutor(len(target.servers)) as pool:
            parts = list(
                pool.map(
                    lambda pair: load_one(pair[1], share, seconds, f"r{run_number}s{pair[0]}"),
                    enumerate(target.servers),
                )
            )
        return Result(
            requests=sum(r.requests for r in parts),
            ok=sum(r.ok for r in parts),
            errors=sum(r.errors for r in parts),
            rps=sum(r.rps for r in parts),
            p50_ms=max(r.p50_ms for r in parts),
            p99_ms=max(r.p99_ms for r in parts),
        )

    try:
        for target in targets:  # warm up: imports, caches, connections
            acked[target.name] += load(target, counts[0], 1.0).ok
        for connections in counts:
            for round_ in range(args.rounds):
                order = targets if round_ % 2 == 0 else list(reversed(targets))
                for target in order:
                    result = load(target, connections, args.seconds)
                    results.setdefault((target.name, connections), []).append(result)
                    acked[target.name] += result.ok
                    print(
                        f"  {target.name:<7} c={connections:<3} {result.rps:8.0f} callbacks/s"
                        f"  p50 {result.p50_ms:7.2f} ms  p99 {result.p99_ms:7.2f} ms"
                        f"  ok {result.ok} errors {result.errors}",
                        flush=True,
                    )
    finally:
        for target in targets:
            for server in target.servers:
                stop(server.proc)
        log_file.close()

    print("\nsummary (median of rounds; ratios to sqlite in this run):\n")
    print("| connections | target | callbacks/s | vs sqlite | p50 ms | p99 ms | p99 vs sqlite |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for connections in counts:
        base = statistics.median(r.rps for r in results[("sqlite", connections)])
        base_p99 = statistics.median(r.p99_ms for r in results[("sqlite", connections)])
        for target in targets:
            rs = results[(target.name, connections)]
            rps = statistics.median(r.rps for r in rs)
            p99 = statistics.median(r.p99_ms for r in rs)
            print(
                f"| {connections} | {target.name} | {rps:.0f} | {rps / base:.2f}"
                f" | {statistics.median(r.p50_ms for r in rs):.1f} | {p99:.1f}"
                f" | {p99 / base_p99:.2f} |"
            )
    lost = False
    print()
    for target in targets:
        tasks, deliveries = count_rows(target.database_url)
        ok = tasks >= acked[target.name] and deliveries >= acked[target.name]
        how = "counted"
        if script is not None:  # wrk logged every acknowledged id: look each one up
            ids = set()
            for prefix in prefixes[target.name]:
                path = acks / prefix
                ids |= set(path.read_text().split()) if path.exists() else set()
            missing = missing_acknowledged(target.database_url, ids)
            ok = ok and missing == 0 and len(ids) == acked[target.name]
            how = f"each of {len(ids)} ids looked up, {missing} missing"
        lost |= not ok
        print(
            f"durability {target.name}: {acked[target.name]} acknowledged; the database holds"
            f" {tasks} tasks, {deliveries} deliveries ({how}): {'ok' if ok else 'LOST CALLBACKS'}"
        )
    return 1 if lost else 0


if __name__ == "__main__":
    sys.exit(main())
