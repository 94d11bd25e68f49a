"""The SQLite driver of the webhook writes (``server.store.hooks``)."""

from __future__ import annotations

import asyncio

import pytest

from server.store.sqlite.webhooks import settled


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
