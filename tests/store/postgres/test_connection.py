"""Start-up against PostgreSQL: one line naming DATABASE_URL, never the password."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import pytest

from server.errors import ConfigError
from server.store.postgres import connection
from tests.harness import free_port
from tests.pgserver import with_database


def test_label_hides_the_password():
    url = "postgresql://app:s3cr%40t@db.example:5432/taskhook"
    assert connection.label(url) == "postgresql://app:***@db.example:5432/taskhook"
    assert connection.label("postgres://db.example/taskhook") == "postgres://db.example/taskhook"


def test_postgres_scheme_is_spelled_for_libpq():
    assert connection.conninfo("postgres://u@h/d") == "postgresql://u@h/d"
    assert connection.conninfo("postgresql://u@h/d") == "postgresql://u@h/d"


async def test_a_server_that_does_not_answer_is_one_line_naming_database_url():
    url = f"postgresql://taskhook:hunter2@127.0.0.1:{free_port()}/taskhook"
    with pytest.raises(ConfigError) as caught:
        await connection.reach(url)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(
        f"DATABASE_URL='postgresql://taskhook:***@127.0.0.1:{urlsplit(url).port}/taskhook'"
    )
    assert "refused" in message
    assert "hunter2" not in message


async def test_an_unknown_database_says_so(pg_databases):
    url = with_database(pg_databases.server, "taskhook_no_such_database")
    with pytest.raises(ConfigError, match='database "taskhook_no_such_database" does not exist'):
        await connection.reach(url)


async def test_an_unknown_user_says_so(pg_databases):
    parts = urlsplit(pg_databases.server)
    url = urlunsplit(parts._replace(netloc=f"nobody_here:pw@{parts.hostname}:{parts.port or 5432}"))
    with pytest.raises(ConfigError) as caught:
        await connection.reach(url)
    assert 'role "nobody_here" does not exist' in str(caught.value)
    assert ":pw@" not in str(caught.value)


async def test_a_reachable_server_passes(postgres_url):
    await connection.reach(postgres_url)
