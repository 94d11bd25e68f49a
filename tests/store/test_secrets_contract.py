"""The store contract for secrets rotation: compare-and-set, atomic across processes."""

from __future__ import annotations

import asyncio

from .conftest import OpenStore


async def test_replace_secret_is_a_compare_and_set_across_stores(open_stores: OpenStore) -> None:
    a, b = await open_stores(), await open_stores()
    value, _ = await a.ensure_secret("callback_secret", "one")
    assert await a.replace_secret("callback_secret", "stale", "two") is False
    assert await b.get_secret("callback_secret") == value == "one"
    results = await asyncio.gather(
        a.replace_secret("callback_secret", "one", "from-a"),
        b.replace_secret("callback_secret", "one", "from-b"),
    )
    assert sorted(results) == [False, True]
    winner = "from-a" if results[0] else "from-b"
    assert await a.get_secret("callback_secret") == await b.get_secret("callback_secret") == winner


async def test_replace_secret_never_creates_one(open_stores: OpenStore) -> None:
    store = await open_stores()
    assert await store.replace_secret("absent", "", "value") is False
    assert await store.get_secret("absent") is None
