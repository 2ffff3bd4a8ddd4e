"""The server's allocator settings: freed buffers are reused without faulting pages in again."""

from __future__ import annotations

import resource

import numpy as np

from observatory_core.runtime.allocator import keep_freed_memory


def _churn() -> None:
    buffers = [np.ones(1_000_000) for _ in range(6)]  # 48 MB alive at once, as in a big query
    del buffers


def test_freed_buffers_are_reused_without_new_page_faults():
    assert keep_freed_memory()
    _churn()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        _churn()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    # with glibc's defaults the heap's top is handed back after each round: ~15,000 faults here
    assert faults < 1_000
