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


def test_the_span_stores_arrow_answer_is_the_frame_of_its_rows(chdb_store):
    """`frame_of_arrow` (the span store's rollup reads, `sql.read_arrow`) gives the frame
    `frame_of` gives from the driver's rows of the same statement: the engine's unsigned
    counts, narrow keys and integer arrays as Int64, its LowCardinality text as text."""
    from sqlalchemy import bindparam, literal_column, select, text

    from observatory_core.metrics.frames import frame_of_arrow
    from observatory_core.storage.clickhouse.sql import read_arrow

    values = {
        "n": "toUInt64(number * 3)",
        "project": "toInt32(number)",
        "bin": "toUInt16(number + 1)",
        "bins": "[toUInt16(number), toUInt16(870)]",
        "model": "toLowCardinality(if(number = 1, '', concat('m', toString(number))))",
        "cost": "if(number = 2, NULL, number / 4)",
        "pairs": "hex(toString(number))",
    }
    query = (
        select(*(literal_column(v).label(k) for k, v in values.items()))
        .select_from(text("numbers(4)"))
        .where(literal_column("number") < bindparam("below"))
    )
    engine = chdb_store.engine
    with engine.connect() as conn:
        result = conn.execute(query, {"below": 3})
        want = frame_of(list(result.keys()), result.cursor.fetchall())
    got = frame_of_arrow(read_arrow(engine, query, {"below": 3}))
    assert got.schema == want.schema
    assert got.to_dicts() == want.to_dicts()
    assert got.height == 3


def test_an_arrow_read_waiting_on_the_busy_engine_stays_within_its_budget(chdb_store):
    """`read_arrow` takes the folder's turn as every statement does (`connect._Turns`), so a
    read under a budget waits for a busy engine no longer than its budget."""
    import threading
    import time

    from sqlalchemy import literal_column, select

    from observatory_core.base.errors import QueryTooSlow
    from observatory_core.storage import budget
    from observatory_core.storage.clickhouse.sql import read_arrow

    one = select(literal_column("1").label("one"))
    assert read_arrow(chdb_store.engine, one, {}).num_rows == 1  # connected before the wait
    busy = threading.Thread(
        target=chdb_store.client.query,  # a statement without a budget holds the engine
        args=("SELECT sum(sleepEachRow(0.25)) FROM numbers(6) SETTINGS max_block_size = 1",),
    )
    busy.start()
    time.sleep(0.2)
    try:
        with budget.time_budget(0.3), pytest.raises(QueryTooSlow):
            read_arrow(chdb_store.engine, one, {})
    finally:
        busy.join()
