"""Retention on both stores: expired traces go whole, rollups outlive their spans, a
project's retention overrides its org's, ingest during a run keeps every span, and on
PostgreSQL months are created ahead and dropped whole (storage/retention.py)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import polars as pl
from sqlalchemy import func, select, update

from observatory_core.accounts.retention import set_retention
from observatory_core.storage.retention import expire
from observatory_core.storage.schema import orgs, spans, trace_totals
from observatory_core.storage.stores import store_for
from tests.helpers import admin_scope, all_spans, make_org, rollup_rows, span, write

NOW = datetime(2027, 6, 15, 12, tzinfo=UTC)


def ago(days: float) -> datetime:
    return NOW - timedelta(days=days)


def trace(org: int, project: int, name: str, *days_ago: float) -> list[dict]:
    """One trace (id from `name`) with a span per age given, the first the root."""
    tid = name.encode().hex().ljust(32, "0")[:32]
    rows = []
    for i, days in enumerate(days_ago):
        parent = {} if i == 0 else {"parent_span_id": f"{tid[:15]}0"}
        rows.append(span(org, project, ago(days), trace_id=tid, span_id=f"{tid[:15]}{i}", **parent))
    return rows


def traces_left(engine) -> dict[str, int]:
    with engine.connect() as conn:
        return dict(
            conn.execute(select(spans.c.trace_id, func.count()).group_by(spans.c.trace_id)).all()
        )


def assert_totals_match_spans(engine) -> None:
    """Every trace's total counts the spans stored: no trace lost some of its spans."""
    with engine.connect() as conn:
        totals = dict(
            conn.execute(
                select(trace_totals.c.trace_id, func.sum(trace_totals.c.span_count)).group_by(
                    trace_totals.c.trace_id
                )
            ).all()
        )
    assert totals == traces_left(engine)


def retain(engine, org: int, span_days, rollup_days=None, projects_=None) -> None:
    set_retention(engine, admin_scope(org), span_days, rollup_days, projects_)


def test_expired_traces_go_whole(engine):
    org, (project,) = make_org(engine, "acme")
    gone = trace(org, project, "gone", 40, 35)  # last span 35 days ago: expired
    straddling = trace(org, project, "straddle", 40, 20)  # last span 20 days ago: kept whole
    recent = trace(org, project, "recent", 5, 4, 3)
    many = [r for i in range(7) for r in trace(org, project, f"old{i}", 60, 59)]
    write(engine, gone + straddling + recent + many)
    retain(engine, org, 30)
    result = expire(engine, NOW, batch_traces=2)  # several batches
    left = traces_left(engine)
    assert sorted(left.values()) == [2, 3]
    assert {r["trace_id"] for r in straddling + recent} == set(left)
    assert result.orgs[org].spans == 2 + 14
    assert result.orgs[org].traces == 8
    assert_totals_match_spans(engine)


def test_rollups_of_old_months_still_chart(engine):
    org, (project,) = make_org(engine, "acme")
    write(engine, [r for i in range(20) for r in trace(org, project, f"t{i}", 90 - i, 90 - i)])
    write(engine, trace(org, project, "new", 1))
    before = rollup_rows(engine, "1day")
    retain(engine, org, 30, 400)
    expire(engine, NOW)
    assert set(traces_left(engine)) == {trace(org, project, "new", 1)[0]["trace_id"]}
    after = rollup_rows(engine, "1day")
    assert after.equals(before), "rollups outlive their spans"
    assert after["span_count"].sum() == 41
    # rollups expire at their own, longer retention
    retain(engine, org, 30, 80)
    expire(engine, NOW)
    kept = rollup_rows(engine, "1day")
    assert kept.equals(before.filter(pl.col("bucket_start") >= ago(80)))
    assert 0 < kept["span_count"].sum() < 41
    assert rollup_rows(engine, "1min")["bucket_start"].min() >= ago(80)


def test_project_retention_overrides_the_orgs(engine):
    org, (main, long_, short) = make_org(engine, "acme", projects=("main", "long", "short"))
    for p, name in ((main, "m"), (long_, "l"), (short, "s")):
        write(engine, trace(org, p, f"{name}10", 10) + trace(org, p, f"{name}60", 60))
    other, (elsewhere,) = make_org(engine, "globex")
    write(engine, trace(other, elsewhere, "g60", 60))  # no retention: kept forever
    retain(engine, org, 30, None, {long_: 90, short: 7})
    expire(engine, NOW)
    df = all_spans(engine)
    kept = {
        (p, round((NOW - t).total_seconds() / 86400))
        for p, t in df.select("project_id", "start_time").iter_rows()
    }
    assert kept == {(main, 10), (long_, 10), (long_, 60), (elsewhere, 60)}


def test_a_trace_in_two_projects_goes_when_both_have_expired_it(engine):
    org, (a, b) = make_org(engine, "acme", projects=("a", "b"))
    rows = trace(org, a, "shared", 40, 39)
    rows[1]["project_id"] = b
    write(engine, rows)
    retain(engine, org, 30, None, {b: 90})
    expire(engine, NOW)
    assert sum(traces_left(engine).values()) == 2, "b keeps it: the whole trace stays"
    retain(engine, org, 30, None, {b: 35})
    expire(engine, NOW)
    assert traces_left(engine) == {}
    assert_totals_match_spans(engine)


def test_ingest_during_a_run_keeps_every_span(engine):
    org, (project,) = make_org(engine, "acme")
    old = [r for i in range(300) for r in trace(org, project, f"old{i}", 50, 49)]
    write(engine, old)
    retain(engine, org, 30)
    fresh = [r for i in range(300) for r in trace(org, project, f"fresh{i}", 1)]
    started = threading.Event()
    results = []

    def run() -> None:
        started.set()
        results.append(expire(engine, NOW, batch_traces=10))

    runner = threading.Thread(target=run)
    runner.start()
    started.wait()
    written = sum(write(engine, fresh[i : i + 20]) for i in range(0, len(fresh), 20))
    runner.join()
    assert written == 300
    assert results[0].orgs[org].spans == 600
    left = traces_left(engine)
    assert set(left) == {r["trace_id"] for r in fresh}
    assert_totals_match_spans(engine)


def test_spans_of_no_trace_total_expire_too(engine):
    """A span no trace total counts (e.g. a trace of duplicates only) still expires."""
    org, (project,) = make_org(engine, "acme")
    write(engine, trace(org, project, "lone", 45) + trace(org, project, "kept", 2))
    with engine.begin() as conn:
        conn.execute(trace_totals.delete().where(trace_totals.c.span_count == 1))
        conn.execute(
            trace_totals.insert().values(
                org_id=org,
                trace_id=trace(org, project, "kept", 2)[0]["trace_id"],
                project_id=project,
                span_count=1,
                error_count=0,
                total_cost_usd=0,
                total_tokens=0,
                max_span_id=0,
                first_start=ago(2),
                last_start=ago(2),
            )
        )
    retain(engine, org, 30)
    expire(engine, NOW)
    assert list(traces_left(engine).values()) == [1]


def test_nothing_expires_without_a_retention(engine):
    org, (project,) = make_org(engine, "acme")
    write(engine, trace(org, project, "ancient", 3000))
    result = expire(engine, NOW)
    assert result.spans == 0 and sum(traces_left(engine).values()) == 1


def test_months_are_created_ahead_and_dropped_when_expired_everywhere(engine):
    store = store_for(engine)
    org, (project,) = make_org(engine, "acme")
    keeper, (kp,) = make_org(engine, "globex")
    march = trace(org, project, "march", 90, 89)  # 2027-03-17: March expires in full
    crossing = [  # March 31 23:59 -> April 1 00:01, expired: deleted before March goes
        span(
            org,
            project,
            datetime(2027, 3, 31, 23, 59, tzinfo=UTC),
            trace_id="c" * 32,
            span_id="c" * 16,
        ),
        span(
            org,
            project,
            datetime(2027, 4, 1, 0, 1, tzinfo=UTC),
            trace_id="c" * 32,
            span_id="d" * 16,
        ),
    ]
    april_live = [  # April 25 -> May 20: alive, so April stays (its traces go whole)
        span(org, project, datetime(2027, 4, 25, tzinfo=UTC), trace_id="a" * 32, span_id="a" * 16),
        span(org, project, datetime(2027, 5, 20, tzinfo=UTC), trace_id="a" * 32, span_id="b" * 16),
    ]
    february = trace(keeper, kp, "feb", 120)  # an org keeping everything: February stays
    write(engine, march + crossing + april_live + february)
    with engine.begin() as conn:
        if store.span_partitions(conn) is not None:  # months before the clock: made here
            made = {p.start for p in store.span_partitions(conn)}
            for month in (2, 3, 4, 5):
                start = datetime(2027, month, 1, tzinfo=UTC)
                if start not in made:
                    store.create_span_partition(conn, start)
    retain(engine, org, 30)
    result = expire(engine, NOW)
    left = traces_left(engine)
    assert set(left) == {"a" * 32, february[0]["trace_id"]}
    assert result.orgs[org].spans == 4
    assert_totals_match_spans(engine)
    with engine.connect() as conn:
        parts = store.span_partitions(conn)
    if parts is None:  # SQLite: one table, batched deletes
        assert result.partitions_dropped == []
        return
    names = {p.name for p in parts}
    assert {"spans_p2027_06", "spans_p2027_07", "spans_p2027_08"} <= names, "made ahead"
    assert "spans_p2027_03" in result.partitions_dropped
    assert not {"spans_p2027_02", "spans_p2027_04"} & set(result.partitions_dropped)
    assert result.bytes_reclaimed > 0
    assert {"spans_p2027_02", "spans_p2027_04", "spans_p2027_05"} <= names
    assert "spans_p2027_03" not in names
    # once the keeper's spans and April's live trace are gone, both months drop
    with engine.begin() as conn:
        conn.execute(update(orgs).where(orgs.c.id == keeper).values(span_retention_days=30))
    later = expire(engine, NOW + timedelta(days=40))
    assert {"spans_p2027_02", "spans_p2027_04", "spans_p2027_05"} <= set(later.partitions_dropped)
    assert traces_left(engine) == {}
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(spans)).scalar() == 0


def test_a_span_resent_with_another_start_time_is_stored_once(engine):
    """On PostgreSQL the span key holds start_time (partitioning); ingest still keeps one."""
    org, (project,) = make_org(engine, "acme")
    first = span(org, project, ago(40), trace_id="e" * 32, span_id="f" * 16)
    later = dict(first, start_time=ago(2), end_time=ago(2))  # another month, too
    assert write(engine, [first]) == 1
    assert write(engine, [later]) == 0
    twins = span(org, project, ago(3), trace_id="9" * 32, span_id="8" * 16)
    assert write(engine, [twins, dict(twins, start_time=ago(1), end_time=ago(1))]) == 1
    assert sorted(traces_left(engine).values()) == [1, 1]
