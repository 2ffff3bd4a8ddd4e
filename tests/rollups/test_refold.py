"""The targeted refold (rollups/refold.py): when stored spans stop counting, recomputing only
their buckets and traces gives what a rebuild from every span gives, on both databases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
from sqlalchemy import select, update

from observatory_core.rollups.maintain import rebuild
from observatory_core.rollups.refold import bucket_of, refold
from observatory_core.storage.schema import ACTOR_ROLLUPS, spans, trace_totals
from tests.helpers import (
    all_spans,
    assert_rollups_match_rebuild,
    make_org,
    rollup_rows,
    span,
    write,
)

START = datetime(2026, 11, 20, 23, 58, 30, tzinfo=UTC)  # minutes, hours and a day change


def _table(engine, table) -> list[dict]:
    with engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(select(table)).mappings()]
    return sorted(rows, key=lambda r: tuple(str(v) for v in r.values()))


def test_refolding_the_touched_buckets_equals_a_rebuild(engine):
    org_id, (project,) = make_org(engine, "acme")
    other, (other_project,) = make_org(engine, "globex")
    rows = []
    for i in range(40):
        at = START + timedelta(seconds=9 * i)
        trace = f"{i // 4 + 1:032x}"
        rows.append(
            span(
                org_id,
                project,
                at,
                trace_id=trace,
                model="gpt-4o" if i % 3 else "gpt-4o-mini",
                input_tokens=10 + i,
                output_tokens=i,
                user_id=f"u{i % 5}",
                status="error" if i % 7 == 0 else "ok",
                duration_ms=100.0 + 37 * i,
            )
        )
        rows.append(span(other, other_project, at, trace_id=trace, input_tokens=5))
    write(engine, rows)
    df = all_spans(engine).filter(pl.col("org_id") == org_id)
    gone = df.filter(pl.col("id") % 3 == 0)  # these stop counting, across every boundary
    with engine.begin() as conn:
        conn.execute(
            update(spans)
            .where(spans.c.id.in_(gone["id"].to_list()))
            .values(duplicate_of="f" * 16, duplicate_trace_id="f" * 32)
        )
        refold(conn, zip(gone["org_id"], gone["trace_id"], gone["start_time"], strict=True))
    totals = _table(engine, trace_totals)
    actors = {g: _table(engine, t) for g, t in ACTOR_ROLLUPS.items()}
    minutes = rollup_rows(engine, "1min")
    assert_rollups_match_rebuild(engine)  # rebuilds: the refolded rollups equal it
    assert _table(engine, trace_totals) == totals
    assert {g: _table(engine, t) for g, t in ACTOR_ROLLUPS.items()} == actors
    kept = df.filter(pl.col("id") % 3 != 0)
    mine = minutes.filter(pl.col("org_id") == org_id)
    assert mine["span_count"].sum() == kept.height  # an independent count
    assert mine["total_tokens_sum"].sum() == kept["total_tokens"].sum()
    theirs = minutes.filter(pl.col("org_id") == other)
    assert theirs["span_count"].sum() == 40  # the other org untouched


def test_bucket_of_aligns_like_time_bucket():
    moment = datetime(2026, 11, 20, 23, 58, 30, 123, tzinfo=UTC)
    assert bucket_of(moment, 60) == datetime(2026, 11, 20, 23, 58, tzinfo=UTC)
    assert bucket_of(moment, 3600) == datetime(2026, 11, 20, 23, tzinfo=UTC)
    assert bucket_of(moment, 86400) == datetime(2026, 11, 20, tzinfo=UTC)


def test_rebuild_leaves_duplicates_out(engine):
    org_id, (project,) = make_org(engine, "acme")
    write(engine, [span(org_id, project, START, input_tokens=7) for _ in range(3)])
    with engine.begin() as conn:
        first = conn.execute(select(spans.c.id).order_by(spans.c.id).limit(1)).scalar_one()
        conn.execute(update(spans).where(spans.c.id == first).values(duplicate_of="a" * 16))
    rebuild(engine)
    assert rollup_rows(engine, "1day")["span_count"].sum() == 2
