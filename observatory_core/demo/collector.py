"""The garbage collector's pace while the demo loads (`load.py`, `producer.py`).

The load allocates millions of rows, none of them in a cycle; at the interpreter's default
first threshold (700 allocations) the collector ran so often, and over the writer's batch of
live rows, that it took about a sixth of the writer's CPU (200k spans: the rows' unpickling
9.4 -> 3.0 us a span, the write path's Python 22 -> 15) and a quarter of the generator's
(25.2 -> 19.0 us a span).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

LOAD_GC_THRESHOLD = 100_000  # allocations between the youngest generation's collections


@contextmanager
def fewer_collections() -> Iterator[None]:
    """The collector's first threshold raised to `LOAD_GC_THRESHOLD`, then put back: cycles
    are still collected, after as many allocations (a server's other threads included)."""
    before = gc.get_threshold()
    gc.set_threshold(max(before[0], LOAD_GC_THRESHOLD), *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)
