"""The two small pieces of the webhook seam each backend adds (``server.store.hooks``)."""

from __future__ import annotations

import asyncio

import pytest

from server.store.postgres.webhooks import placeholders
from server.store.sqlite.webhooks import settled


def test_placeholders_become_psycopg_ones_and_a_literal_percent_stays_literal() -> None:
    assert placeholders("SELECT ? WHERE a LIKE 'x%' AND b = ?") == (
        "SELECT %s WHERE a LIKE 'x%%' AND b = %s"
    )


def test_a_sqlite_webhook_write_runs_to_its_end_in_one_step() -> None:
    async def write() -> int:
        return 7

    assert settled(write()) == 7


def test_a_sqlite_webhook_write_that_waits_is_refused() -> None:
    async def write() -> int:
        await asyncio.sleep(0)
        return 7

    with pytest.raises(RuntimeError, match="waited"):
        settled(write())
