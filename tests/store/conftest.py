"""The store fixtures, parametrised over every backend there is.

``backend`` names the backend; ``database_url`` makes one fresh, empty
database of it for the test; ``open_stores`` opens as many stores on that
database as a test wants (each stands for a process or a replica). To run the
contract suite on another backend, add its name to ``BACKENDS`` and a branch
to ``database_url`` that creates (and afterwards drops) a fresh database.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from server.settings import Settings
from server.store import Store, open_store

BACKENDS = ["sqlite", "postgresql"]

OpenStore = Callable[..., Awaitable[Store]]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def database_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh, empty database of ``backend``, dropped after the test."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path}/contract.db"
        return
    if backend == "postgresql":  # emptied for this test; see tests/pgserver.py
        yield request.getfixturevalue("postgres_url")
        return
    raise AssertionError(f"no database for backend {backend!r}")  # pragma: no cover


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
