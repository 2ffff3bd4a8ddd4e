"""The demo load's collector pace (`demo/collector.py`) is put back after the load, or after
a load that failed."""

import gc

import pytest

from observatory_core.demo.collector import LOAD_GC_THRESHOLD, fewer_collections


def test_the_threshold_is_raised_then_put_back():
    before = gc.get_threshold()
    with fewer_collections():
        assert gc.get_threshold() == (max(before[0], LOAD_GC_THRESHOLD), *before[1:])
    assert gc.get_threshold() == before
    with pytest.raises(RuntimeError), fewer_collections():
        raise RuntimeError("a failed write")
    assert gc.get_threshold() == before
