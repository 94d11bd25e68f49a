"""The store fixtures, parametrised over every backend there is.

``backend`` names the backend and ``database_url`` makes one empty database
of it for the test (both in ``tests/conftest.py``, which runs every test that
uses them once per backend of its ``BACKENDS``); ``open_stores`` opens as many
stores on that database as a test wants (each stands for a process or a
replica).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from server.settings import Settings
from server.store import Store, open_store

OpenStore = Callable[..., Awaitable[Store]]


@pytest.fixture
def store_settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(
        database_url=database_url,
        reconciler="off",
        archive=True,
        archive_dir=str(tmp_path / "files"),
    )


@pytest.fixture
async def open_stores(store_settings: Settings) -> AsyncIterator[OpenStore]:
    """``await open_stores(**settings_overrides)``: one more opened store on the database."""
    opened: list[Store] = []

    async def make(**overrides: Any) -> Store:
        store = open_store(replace(store_settings, **overrides))
        await store.open()
        opened.append(store)
        return store

    yield make
    for store in reversed(opened):
        await store.close()


@pytest.fixture
async def store(open_stores: OpenStore) -> Store:
    return await open_stores()
