"""The packed latency sketch (storage/packed_sketch.py) in ClickHouse's SQL: the same bytes as
on the other stores, a record being the four big-endian bytes of `bin << 16 | count`. The
span store's rollups keep the bins as a map instead (`bin_map`, layout.py); these serve a read
that builds a sketch from raw spans (`storage/stores/clickhouse.py` compiles the constructs
with them)."""

from __future__ import annotations


def records(bins_counts: str) -> str:
    """A compacted sketch from an array of (bin, count) tuples, ascending by bin."""
    return (
        "arrayStringConcat(arrayMap(bc -> arrayStringConcat(arrayMap(k -> reverse(reinterpret("
        "toUInt32(bitShiftLeft(toUInt32(bc.1), 16) + least(65535, bc.2 - k * 65535)), "
        "'FixedString(4)')), range(toUInt32(intDiv(bc.2 + 65534, 65535))))), "
        f"arraySort({bins_counts})))"
    )


def decoded(sketch: str) -> str:
    """A sketch's (bin, count) records as an array of tuples."""
    return (
        f"arrayMap(i -> (bitShiftRight(reinterpretAsUInt32(reverse(substring({sketch}, i * 4 + 1, "
        f"4))), 16), bitAnd(reinterpretAsUInt32(reverse(substring({sketch}, i * 4 + 1, 4))), "
        f"65535)), range(toUInt32(intDiv(length({sketch}), 4))))"
    )


def summed(pairs: str) -> str:
    """(bin, count) tuples with each bin's counts added."""
    return (
        f"arrayMap(b -> (b, arraySum(arrayMap(p -> if(p.1 = b, p.2, 0), {pairs}))), "
        f"arrayDistinct(arrayMap(p -> p.1, {pairs})))"
    )
