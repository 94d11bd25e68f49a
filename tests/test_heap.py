"""A serving process's start-up heap is frozen and its youngest generation collected less often."""

from __future__ import annotations

import gc
import weakref

from server.observe.heap import YOUNG_THRESHOLD, settled_heap


def test_what_is_alive_on_entry_is_frozen_and_the_threshold_raised_until_exit() -> None:
    before_threshold, frozen_before = gc.get_threshold(), gc.get_freeze_count()
    start_up = [{"made": "before"} for _ in range(100)]
    with settled_heap():
        assert gc.get_freeze_count() >= frozen_before + len(start_up)
        assert gc.get_threshold() == (YOUNG_THRESHOLD, *before_threshold[1:])
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == before_threshold


def test_a_cycle_made_while_serving_is_still_collected() -> None:
    class Node:
        other: Node

    with settled_heap():
        a, b = Node(), Node()
        a.other, b.other = b, a
        alive = weakref.ref(a)
        del a, b
        gc.collect()
        assert alive() is None


async def test_the_app_serves_with_its_start_up_heap_frozen(app, client) -> None:
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold()[0] == YOUNG_THRESHOLD
    assert (await client.get("/healthz")).status_code == 200
