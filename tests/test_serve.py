"""``python -m server`` start-up: a start that cannot work says one line naming the setting.

It exits 2. Every case runs the real command in a child process and checks that the one
line is all it printed: no banner, no uvicorn line, no traceback.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from .harness import ServerProcess, free_port, run_cli

pytestmark = pytest.mark.e2e


def start(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = ServerProcess(tmp_path / "t.db").env()
    base.update(API_TOKEN="", CALLBACK_SECRETS="")  # a first start would print the banner
    base.update(env)
    return subprocess.run(
        [sys.executable, "-m", "server", "serve"],
        env=base,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    output = (result.stdout + result.stderr).strip()
    assert result.returncode == 2, output
    assert output.count("\n") == 0, f"more than one line:\n{output}"
    assert "Traceback" not in output and "startup" not in output.lower()
    return output


def test_port_abc(tmp_path):
    line = one_line(start(tmp_path, PORT="abc"))
    assert "PORT='abc' is not a whole number; set e.g. PORT=8000" in line


def test_port_out_of_range(tmp_path):
    line = one_line(start(tmp_path, PORT="80000"))
    assert "PORT='80000' is out of range (1 to 65535); set e.g. PORT=8000" in line


def test_port_in_use_names_the_port_and_a_free_one(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = one_line(start(tmp_path, PORT=str(port)))
    assert f"PORT={port} is already in use on 127.0.0.1" in line
    suggested = int(line.rpartition("set e.g. PORT=")[2])
    assert suggested != port
    assert not (tmp_path / "t.db").exists() or "API_TOKEN" not in line


@pytest.mark.parametrize("host", ["no-such-host.invalid", "192.0.2.1", "300.1.1.1"])
def test_a_host_this_machine_does_not_have(tmp_path, host):
    line = one_line(start(tmp_path, HOST=host))
    assert f"HOST='{host}' is not an address of this machine" in line
    assert "HOST=127.0.0.1" in line and "HOST=0.0.0.0" in line


def test_public_url_without_a_scheme(tmp_path):
    line = one_line(start(tmp_path, PUBLIC_URL="example.com"))
    assert "PUBLIC_URL='example.com' has no http:// or https:// scheme" in line
    assert "PUBLIC_URL=https://example.com" in line


def test_a_file_where_the_database_folder_should_be(tmp_path):
    (tmp_path / "blocker").write_text("not a folder")
    line = one_line(start(tmp_path, DATABASE_URL=f"sqlite:///{tmp_path}/blocker/t.db"))
    assert "DATABASE_URL=" in line and "a file is in the way" in line


@pytest.mark.skipif(shutil.which("chattr") is None, reason="needs chattr (e2fsprogs)")
def test_a_database_folder_that_is_not_writable(tmp_path):
    # Root ignores file modes; an immutable folder refuses even root.
    folder = tmp_path / "readonly"
    folder.mkdir()
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("this filesystem has no immutable flag")
    try:
        line = one_line(start(tmp_path, DATABASE_URL=f"sqlite:///{folder}/t.db"))
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)
    assert f"DATABASE_URL='{folder}/t.db'" in line
    assert "not writable" in line and "make it writable" in line


@pytest.fixture
def full_disk(tmp_path):
    """A 1 MiB tmpfs with a database on it, then filled to the last byte."""
    mount = tmp_path / "small"
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True
    )
    if made.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {made.stderr.decode().strip()}")
    try:
        ok = start_check(tmp_path, DATABASE_URL=f"sqlite:///{mount}/t.db")
        assert ok.returncode == 0, ok.stderr
        with open(mount / "filler", "wb") as filler:
            try:
                while True:
                    filler.write(b"\0" * 65536)
                    filler.flush()
            except OSError:
                pass
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def start_check(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = ServerProcess(tmp_path / "t.db").env()
    base.update(env)
    return run_cli("check", env=base, cwd=tmp_path)


def test_check_on_a_full_disk_says_the_disk_is_full(tmp_path, full_disk):
    result = start_check(tmp_path, DATABASE_URL=f"sqlite:///{full_disk}/t.db")
    assert result.returncode == 1
    assert "the disk holding the database is full" in result.stderr
    assert "rollback" not in result.stderr


def test_serve_on_a_full_disk_says_the_disk_is_full(tmp_path, full_disk):
    line = one_line(start(tmp_path, DATABASE_URL=f"sqlite:///{full_disk}/t.db"))
    assert "the disk holding the database is full" in line


def test_a_good_start_still_serves(tmp_path):
    server = ServerProcess(tmp_path / "t.db", port=free_port()).start()
    try:
        assert "taskhook listening on http://127.0.0.1:" in server.logs()
    finally:
        server.stop()
