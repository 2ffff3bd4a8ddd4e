"""Separate twins found among many stored spans alike (`span_store_twins._stored_candidates`):
the stored candidates near a new span are read by its tokens and the 100 ms slices its start's
tolerance covers together. A crowd of stored spans with a new span's tokens within the batch's
second (more than the read's 10,000 rows, which the windows and token pairs read apart let
through; the old read missed the twin) does not hide its twin, and a twin on the far side of a slice's edge, up to the tolerance
exactly, is found; one a microsecond past it is not."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from observatory_core.ingest import span_store_twins
from observatory_core.ingest.dedup import TOLERANCE
from observatory_core.storage.clickhouse.writes import write_spans
from tests.ingest.clickhouse.conftest import llm_call

ORG = 41
CROWD = 10_500  # stored spans with the crowded span's tokens, none within its tolerance
US = timedelta(microseconds=1)


# a whole second 5 minutes back: the slices (100 ms) start on it
EDGE = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
# (new span's start, stored twin's offset from it, found): starts on and beside slice edges
CASES = [
    (EDGE, -TOLERANCE, True),  # the tolerance exactly, into the slice before
    (EDGE + 100_000 * US - US, TOLERANCE, True),  # the last microsecond of a slice, forward
    (EDGE + 250 * 1000 * US, -TOLERANCE + US, True),
    (EDGE + 450 * 1000 * US, 37 * 1000 * US, True),  # across the edge at 500 ms
    (EDGE + 650 * 1000 * US, TOLERANCE + US, False),  # a microsecond too far
    (EDGE + 850 * 1000 * US, -TOLERANCE - US, False),
]


@pytest.fixture(scope="module")
def marked(chdb_store):
    stored, batch, expected = [], [], {}
    for i, (start, offset, found) in enumerate(CASES):
        tokens = (1000 + i, 7)
        twin = llm_call(ORG, 10_000_000 + i, start + offset, tokens, "lib.a")
        new = llm_call(ORG, 20_000_000 + i, start, tokens, "lib.b")
        stored.append(twin)
        batch.append(new)
        expected[new["span_id"]] = twin["span_id"] if found else None
    # the crowd: the second case's tokens, within the batch's window (its starts a second
    # apart at most, less the tolerance) and before that case's twin in the table's order,
    # never within the tolerance of the case's start
    crowd = [
        llm_call(ORG, 30_000_000 + k, EDGE - TOLERANCE + k * 9 * US, (1001, 7), "lib.a")
        for k in range(CROWD)
    ]
    write_spans(chdb_store, stored)
    write_spans(chdb_store, crowd)
    rows = [dict(r) for r in batch]
    count = span_store_twins.set_aside_twins(chdb_store, rows, frozenset(), datetime.now(UTC))
    return count, rows, expected


def test_each_twin_is_found_across_a_slice_edge_and_none_past_the_tolerance(marked):
    count, rows, expected = marked
    assert {r["span_id"]: r["duplicate_of"] for r in rows} == expected
    assert count == sum(1 for twin in expected.values() if twin is not None) == 4


def test_a_crowd_of_spans_alike_past_the_reads_bound_does_not_hide_a_twin(chdb_store, marked):
    _, rows, _ = marked
    crowded = rows[1]
    # the crowd is there: more spans with its tokens in the batch's second than the read's bound
    ((alike,),) = chdb_store.client.query(
        f"SELECT count() FROM {chdb_store.table('spans')} WHERE org_id = {ORG} "
        "AND input_tokens = 1001 AND output_tokens = 7"
    ).result_rows
    assert alike > span_store_twins.POOL_ROWS
    assert crowded["duplicate_of"] == f"{10_000_001:016x}"
    assert crowded["duplicate_trace_id"] == f"{10_000_001:032x}"
