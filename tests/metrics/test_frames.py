"""`metrics/frames.frame_of`: the span store's integer array columns built from their flat
values must give the frame polars gives from the rows itself (values and types), and any
other column must go polars' own way."""

from __future__ import annotations

import polars as pl
import pytest

from observatory_core.metrics.frames import frame_of

CASES = {
    "bins and counts": [(1, [3, 7], [2, 1]), (2, [], []), (3, [870], [5])],
    "every list empty": [(1, [], []), (2, [], [])],
    "a missing list": [(1, None, [1]), (2, [4], [2])],
    "floats": [(1, [1.5], [1]), (2, [2.5, 3.0], [2, 3])],
    "a null among the values": [(1, [1, None], [1, 1]), (2, [2], [2])],
    "past Int64": [(1, [2**63], [1])],
    "text": [(1, ["a", "b"], [1, 2])],
    "tuples": [(1, (1, 2), (3, 4)), (2, (5,), (6,))],
    "a float after integers": [(1, [1], [1]), (2, [2.5], [1])],
    "text after integers": [(1, [1], [1]), (2, ["7"], [1])],
    "a bool after integers": [(1, [1], [1]), (2, [True], [1])],
}


@pytest.mark.parametrize("rows", CASES.values(), ids=CASES.keys())
def test_frame_of_equals_polars_own(rows):
    columns = ["bucket", "bins", "bin_counts"]
    want = pl.DataFrame(
        {c: list(v) for c, v in zip(columns, zip(*rows, strict=True), strict=True)},
        strict=False,
    )
    got = frame_of(columns, rows)
    assert got.schema == want.schema
    assert got.to_dicts() == want.to_dicts()


def test_no_rows_gives_the_columns():
    assert frame_of(["a", "b"], []).columns == ["a", "b"]
