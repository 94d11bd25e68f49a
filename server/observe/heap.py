"""The collector and a serving process: what start-up built is not scanned again.

CPython's cyclic collector scans the objects a collection's generation holds.
A serving taskhook holds ~50,000 long-lived objects from start-up (modules,
the app, metrics, the templates), and every full collection scanned them all
with the event loop stopped: 20-50 ms, a few times a minute under load, which
every request caught behind it waited out. The collector took 20-30 µs of
each callback in all; settled, 10-13 µs and pauses under 2 ms
(``scripts/bench_gc.py``).

``settled_heap()`` is entered once the application has started: it moves
everything alive into the permanent generation (``gc.freeze``; never
scanned, never freed, as start-up's objects live as long as the process)
and collects the youngest generation after ``YOUNG_THRESHOLD`` net
allocations instead of 700. Leaving it (shutdown) undoes both. Reference
counting still frees almost everything at once; only cycles wait longer, and
the threshold bounds how many. A larger threshold saves little more and makes
each pass longer (10,000: ~9 ms).
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

#: Net allocations of container objects between two collections of the youngest generation.
YOUNG_THRESHOLD = 2_000


@contextlib.contextmanager
def settled_heap(young_threshold: int = YOUNG_THRESHOLD) -> Iterator[None]:
    """Freeze what is alive now and collect less often, until the block ends."""
    before = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(young_threshold, *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()
