"""Real processes for end-to-end tests: taskhook under uvicorn on a free loopback port."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
API_TOKEN = "test-api-token"
CALLBACK_SECRET = "test-callback-secret"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(condition, timeout: float = 20.0, interval: float = 0.02, what: str = "condition"):
    """Poll ``condition`` until it returns a truthy value; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up waiting for {what} after {timeout}s")
        time.sleep(interval)


class ServerProcess:
    """``python -m server`` in a child process, with its own database and port."""

    def __init__(
        self,
        db_path: Path,
        env: dict[str, str] | None = None,
        port: int | None = None,
        preexec_fn: Callable[[], None] | None = None,
    ):
        self.db_path = db_path
        self.port = port or free_port()
        self.extra_env = env or {}
        self.preexec_fn = preexec_fn  # runs in the child before exec (e.g. to lower a limit)
        self.proc: subprocess.Popen | None = None
        self.log_path = db_path.parent / f"server-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ACEDATA", "SEEDANCE2"))}
        env.update(
            DATABASE_URL=f"sqlite:///{self.db_path}",
            HOST="127.0.0.1",
            PORT=str(self.port),
            API_TOKEN=API_TOKEN,
            CALLBACK_SECRETS=CALLBACK_SECRET,
            RECONCILER="off",
            ARCHIVE="off",
            # No webhooks unless a test asks: generated endpoint URLs must never be called.
            DELIVERY="off",
            PYTHONUNBUFFERED="1",
            # This checkout's package, whatever the child's working directory.
            PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        )
        env.update(self.extra_env)
        return env

    def start(self, wait: bool = True) -> ServerProcess:
        with open(self.log_path, "ab") as log:  # the child keeps its own copy open
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "server", "serve"],
                cwd=self.db_path.parent,
                env=self.env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=self.preexec_fn,
            )
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 20.0) -> None:
        def up() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.logs()}")
            try:
                return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(up, timeout, what=f"server on port {self.port}")

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        """SIGKILL: no chance to flush or clean up, like a power cut of the process."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 30.0) -> int | None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode if self.proc else None


async def eventually(
    condition: Callable[[], Any], what: str = "condition", within: float = 15.0
) -> Any:
    """Await ``condition()`` (sync or async) until it is truthy; return its value.

    The state being waited on lives behind HTTP, SQLite or another task, so
    there is nothing to await directly; ``within`` only stops a hung test.
    """
    deadline = time.monotonic() + within
    while True:
        value = condition()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up waiting for {what} after {within}s")
        await asyncio.sleep(0.01)


def edit_sqlite(db_path: Path, sql: str, params: tuple[Any, ...] = ()) -> None:
    """Change a SQLite database behind the server's back (tests standing in for time or a fix).

    A connection of its own, as another process would: the server's store
    reads the change on its next query.
    """
    import sqlite3

    conn = sqlite3.connect(db_path, timeout=10)
    try:
        with conn:
            conn.execute(sql, params)
    finally:
        conn.close()


def run_cli(
    *args: str,
    env: Mapping[str, str],
    cwd: Path,
    timeout: float = 60,
    check: bool = False,
) -> subprocess.CompletedProcess[str]:
    """``python -m server ARGS`` in a child process, as an operator runs it; output as text."""
    return subprocess.run(
        [sys.executable, "-m", "server", *args],
        env=dict(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=check,
    )


@contextlib.contextmanager
def fake_upstream(*args: str) -> Iterator[str]:
    """``scripts/fake_upstream.py ARGS`` in its own process; yields its base URL.

    ``--port=0``: it binds a free port and prints where it listens first.
    """
    command = [sys.executable, "scripts/fake_upstream.py", "--port=0", "--log-level=warning"]
    proc = subprocess.Popen([*command, *args], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        found = re.search(r"http://127\.0\.0\.1:\d+", proc.stdout.readline())
        assert found, "the fake upstream did not say where it listens"
        yield found.group(0)
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
