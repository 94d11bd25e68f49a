"""``python -m server endpoint add|list|remove`` against a real database file."""

from __future__ import annotations

import re

import pytest
from standardwebhooks import Webhook

from server.cli.main import main


@pytest.fixture
def env(tmp_path, database_url, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATABASE_URL", database_url)


def test_add_list_remove(env, capsys):
    assert (
        main(
            [
                "endpoint",
                "add",
                "http://10.0.0.2:8080/hooks",
                "--events",
                "task.succeeded, task.failed",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    ident = re.search(r"added (ep_\w+) http://10\.0\.0\.2:8080/hooks", out).group(1)
    secret = re.search(r"secret: (whsec_\S+)", out).group(1)
    Webhook(secret)  # a secret the library accepts
    assert "task.succeeded, task.failed" in out

    assert main(["endpoint", "list"]) == 0
    listed = capsys.readouterr().out
    assert ident in listed and "events=task.succeeded,task.failed" in listed
    assert "pending=0" in listed and "enabled" in listed
    assert secret not in listed

    assert main(["endpoint", "remove", ident]) == 0
    assert f"removed {ident}" in capsys.readouterr().out
    assert main(["endpoint", "list"]) == 0
    assert "no endpoints" in capsys.readouterr().out


def test_bad_input_is_a_usage_error_and_an_unknown_id_a_failure(env, capsys):
    assert main(["endpoint", "add", "ftp://x/y"]) == 2
    assert "http:// or https://" in capsys.readouterr().err
    assert main(["endpoint", "add", "http://x/y", "--events", "task.done"]) == 2
    assert "'task.done'" in capsys.readouterr().err
    assert main(["endpoint", "remove", "ep_nope"]) == 1
    assert "no endpoint has id 'ep_nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:
        main(["endpoint"])
    assert usage.value.code == 2
