"""Schema version 5: the distinct users and sessions of each hour (`rollup_actors_1hour`),
which the Overview's Unique users and sessions read for whole hours on the span store. Checked
against polars on the rows sent: a resend with another user id (the first copy stays, as on the
other stores), a twin set aside, a user seen only in the period before, the filters the rollup
cannot answer (read from the spans), a store at version 4 filled at its next open."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
import pytest
from sqlalchemy import event

from observatory_core.accounts.permissions import Role
from observatory_core.accounts.scope import Scope
from observatory_core.filters.spec import FilterSpec
from observatory_core.reports.overview import period_overview
from observatory_core.rollups.actors import distinct_actors
from observatory_core.storage.clickhouse import ddl
from observatory_core.storage.clickhouse.connect import open_span_store
from observatory_core.storage.clickhouse.writes import write_spans
from tests.helpers import span
from tests.storage.clickhouse.conftest import store_at_version

NOW = datetime(2026, 11, 20, 12, 17, 23, tzinfo=UTC)  # ragged: the edges read the spans
ORG = 3


def _rows() -> list[dict]:
    """Two weeks of spans: users u0-u4 and sessions by hour, two projects, two models; u9 only
    in the week before; a twin set aside carrying a user no other span has."""
    out = []
    for h in range(0, 14 * 24, 5):
        start = NOW - timedelta(hours=h, minutes=h % 60)
        out.append(
            span(
                ORG,
                1 + h % 2,
                start,
                user_id=f"u{h % 5}",
                session_id=f"s{h // 7}",
                model="gpt-4o" if h % 3 else "claude",
            )
        )
    out.append(span(ORG, 1, NOW - timedelta(days=9), user_id="u9", session_id="only-before"))
    out.append(span(ORG, 2, NOW - timedelta(hours=30), user_id="twin-user", duplicate_of="1"))
    out.append(span(ORG, 1, NOW - timedelta(hours=2), user_id=None, session_id=None))
    return out


_COLUMNS = ("start_time", "user_id", "session_id", "duplicate_of", "project_id", "model")


def _frame(rows: list[dict]) -> pl.DataFrame:
    """The rows sent, as polars reads them (the first copy of each)."""
    return pl.DataFrame(
        [{k: r.get(k) for k in _COLUMNS} for r in rows],
        schema={
            "start_time": pl.Datetime("us", "UTC"),
            "user_id": pl.Utf8,
            "session_id": pl.Utf8,
            "duplicate_of": pl.Utf8,
            "project_id": pl.Int64,
            "model": pl.Utf8,
        },
    )


def _expected(sent: pl.DataFrame, start: datetime, end: datetime, **where) -> dict[str, int]:
    rows = sent.filter(
        (pl.col("start_time") >= start) & (pl.col("start_time") < end),
        pl.col("duplicate_of").is_null(),
        *(pl.col(k).is_in(v) for k, v in where.items()),
    )
    return {
        "user": rows["user_id"].drop_nulls().n_unique(),
        "session": rows["session_id"].drop_nulls().n_unique(),
    }


@pytest.fixture(scope="module")
def loaded(chdb_store):
    rows = _rows()
    write_spans(chdb_store, rows)
    # the same span sent again with another user and session: the first copy stays
    resent = dict(rows[0], user_id="changed-user", session_id="changed-session")
    write_spans(chdb_store, [resent])
    return chdb_store, _frame(rows)


def _hours(sent: pl.DataFrame) -> set[tuple]:
    """(hour, project, kind, actor) of the counted spans sent, as polars finds them."""
    counted = sent.filter(pl.col("duplicate_of").is_null()).with_columns(
        pl.col("start_time").dt.truncate("1h").dt.replace_time_zone(None).alias("hour")
    )
    want = set()
    for kind, column in (("user", "user_id"), ("session", "session_id")):
        for hour, project, actor in (
            counted.select("hour", "project_id", column).drop_nulls().rows()
        ):
            want.add((hour, project, kind, actor))
    return want


def _statements(engine) -> list[str]:
    seen: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda c, cur, s, *a: seen.append(s))
    return seen


def test_the_hour_table_holds_each_hours_actors_of_the_counted_spans(loaded):
    store, sent = loaded
    got = store.client.query(
        f"SELECT DISTINCT bucket_start, project_id, kind, actor FROM "
        f"{store.table('rollup_actors_1hour')} WHERE org_id = {ORG}"
    ).result_rows
    want = _hours(sent)
    assert {(h.replace(tzinfo=None), p, k, a) for h, p, k, a in got} == want
    assert not [a for *_, a in got if a in ("changed-user", "twin-user")]


@pytest.mark.parametrize("days", [1, 7, 14])
def test_distinct_actors_read_the_hours_and_the_edges_as_polars_counts(loaded, days):
    store, sent = loaded
    scope = Scope(org_id=ORG, role=Role.ADMIN)
    start, end = NOW - timedelta(days=days), NOW
    seen = _statements(store.engine)
    got = distinct_actors(store.engine, scope, start, end, now=NOW)
    assert got == _expected(sent, start, end)
    assert any("rollup_actors_1hour" in s for s in seen)  # the hours from the table
    raw = distinct_actors(store.engine, scope, start, end, now=NOW, force="raw")
    assert raw == got


def test_the_overview_counts_users_of_each_period_with_and_without_filters(loaded):
    store, sent = loaded
    scope = Scope(org_id=ORG, role=Role.ADMIN)
    week = timedelta(days=7)
    for spec, where in (
        (FilterSpec(relative="7d"), {}),
        (FilterSpec(relative="7d", project_ids=(2,)), {"project_id": [2]}),
        (FilterSpec(relative="7d", models=("claude",)), {"model": ["claude"]}),
    ):
        seen = _statements(store.engine)
        kpis = {k.key: k for k in period_overview(store.engine, scope, spec, now=NOW).kpis}
        now_, before = (
            _expected(sent, NOW - week, NOW, **where),
            _expected(sent, NOW - 2 * week, NOW - week, **where),
        )
        assert (kpis["users"].current, kpis["users"].previous) == (now_["user"], before["user"])
        assert (kpis["sessions"].current, kpis["sessions"].previous) == (
            now_["session"],
            before["session"],
        )
        # a model filter the hours cannot answer: read from the spans
        assert any("rollup_actors_1hour" in s for s in seen) == ("model" not in where)
    # u9 was seen only in the week before
    assert (
        before["user"] >= 1
        and "u9" in sent.filter(pl.col("start_time") < NOW - week)["user_id"].to_list()
    )


def test_a_store_at_version_4_gets_its_spans_actors_at_its_next_open(chdb_session, monkeypatch):
    """Spans over five months (across a new year) stored before version 5: its next open
    fills the hours of every month, one INSERT per month (`ddl.fill_by_month`), as polars
    finds them on the counted spans."""
    url, store = store_at_version(chdb_session, "version_4", 4)
    older = [
        span(ORG, 1 + i % 2, NOW - timedelta(days=days), user_id=f"old{i}", session_id=f"o{i}")
        for i, days in enumerate((40, 75, 310, 330, 331))
    ]
    rows = _rows() + older
    filled: list[int] = []
    real = ddl.fill_by_month

    def counted_fill(*args, **kwargs):
        filled.append(real(*args, **kwargs))
        return filled[-1]

    monkeypatch.setattr(ddl, "fill_by_month", counted_fill)
    try:
        write_spans(store, rows)
        store.close()
        store = open_span_store(url)
        versions = store.client.query(f"SELECT version FROM {store.table('schema_versions')}")
        assert sorted(v for (v,) in versions.result_rows) == [m.version for m in ddl.MIGRATIONS]
        sent = _frame(rows)
        # the five months that hold spans, December 2025 to November 2026: not the seven empty
        # months between (`ddl.months` reads the spans table's partitions)
        months = sent["start_time"].dt.truncate("1mo").unique().sort()
        assert months.len() == 5 and filled == [5]
        got = store.client.query(
            f"SELECT DISTINCT bucket_start, project_id, kind, actor FROM "
            f"{store.table('rollup_actors_1hour')} WHERE org_id = {ORG}"
        ).result_rows
        assert {(h.replace(tzinfo=None), p, k, a) for h, p, k, a in got} == _hours(sent)
        scope = Scope(org_id=ORG, role=Role.ADMIN)
        start = NOW - timedelta(days=400)
        first = distinct_actors(store.engine, scope, start, NOW, now=NOW)
        assert first == _expected(sent, start, NOW)
        # version 5 again (a second process opening the store together): nothing changes
        for statement in ddl.MIGRATIONS[4].statements(ddl.Naming(store.database)):
            store.client.command(statement)
        assert ddl.fill_by_month(store, ddl.MIGRATIONS[4].fill, {}) == 5
        assert distinct_actors(store.engine, scope, start, NOW, now=NOW) == first
    finally:
        chdb_session.drop(store)


def test_trace_counts_add_up_a_traces_rows_across_projects_at_the_windows_edge(chdb_store):
    """Trace metrics on the span store group every trace's rows at once
    (`Store.groups_trace_totals`): a trace begun before the window in one project and going on
    inside it in another is not counted, whatever the project filter; one in two projects
    inside it counts once."""
    from observatory_core.metrics.engine import run_metrics
    from observatory_core.metrics.query import MetricQuery
    from observatory_core.metrics.trace_path import trace_counts

    org, start = 11, NOW - timedelta(days=1)
    rows = [
        span(org, 1, start - timedelta(minutes=5), trace_id="a" * 32, span_id="a" * 16),
        span(org, 2, start + timedelta(minutes=5), trace_id="a" * 32, parent_span_id="a" * 16),
        span(org, 1, start + timedelta(hours=2), trace_id="b" * 32, span_id="b" * 16),
        span(org, 2, start + timedelta(hours=3), trace_id="b" * 32, parent_span_id="b" * 16),
        span(org, 2, start + timedelta(hours=4), trace_id="c" * 32),
    ]
    write_spans(chdb_store, rows)
    firsts = (
        pl.DataFrame({"trace": [r["trace_id"] for r in rows], "t": [r["start_time"] for r in rows]})
        .group_by("trace")
        .agg(pl.col("t").min())
    )
    inside = firsts.filter((pl.col("t") >= start) & (pl.col("t") < NOW))
    scope = Scope(org_id=org, role=Role.ADMIN)
    for projects, want in (((), inside.height), ((1,), 1), ((2,), 2)):
        spec = FilterSpec(relative=None, start=start, end=NOW, project_ids=projects)
        query = MetricQuery(series=("trace_count.count",), filters=spec, bucket=None)
        for force in ("rollup", "raw"):
            got = run_metrics(chdb_store.engine, scope, query, now=NOW, force=force)
            assert got.frame["trace_count.count"].item() == want, (projects, force)
    assert inside.height == 2
    # the Overview's two periods in one statement (`trace_counts`, `Store.pairs_periods`): the
    # day before holds trace a's first span, the window c and b, a window of an hour none
    windows = [(start, NOW), (start - timedelta(days=1), start), (NOW, NOW + timedelta(hours=1))]
    for projects, want in (((), [2, 1, 0]), ((1,), [1, 1, 0]), ((2,), [2, 1, 0])):
        spec = FilterSpec(relative=None, start=start, end=NOW, project_ids=projects)
        per_window = [
            firsts.filter((pl.col("t") >= a) & (pl.col("t") < b)).height for a, b in windows
        ]
        assert trace_counts(chdb_store.engine, scope, spec, windows) == want, projects
        assert per_window == [2, 1, 0]


def test_the_rebuild_fills_the_hours_a_view_missed(chdb_session):
    """Spans inserted while the actors' view was away (failed part-way): their users are
    missing from the hours until `rebuild_actors` (`clickhouse-rebuild-rollups`) fills them
    from the spans; run again, nothing changes."""
    from observatory_core.storage.clickhouse.rebuild import rebuild_actors

    store = chdb_session.store("actors_rebuild")
    try:
        rows = _rows()
        store.client.command(f"DETACH TABLE {store.table('rollup_actors_1hour_mv')}")
        write_spans(store, rows[:20])
        store.client.command(f"ATTACH TABLE {store.table('rollup_actors_1hour_mv')}")
        write_spans(store, rows[20:])
        scope = Scope(org_id=ORG, role=Role.ADMIN)
        start, sent = NOW - timedelta(days=14), _frame(rows)
        assert distinct_actors(store.engine, scope, start, NOW, now=NOW) != _expected(
            sent, start, NOW
        )
        assert rebuild_actors(store) > 0
        assert distinct_actors(store.engine, scope, start, NOW, now=NOW) == _expected(
            sent, start, NOW
        )
        rebuild_actors(store)
        assert distinct_actors(store.engine, scope, start, NOW, now=NOW) == _expected(
            sent, start, NOW
        )
    finally:
        chdb_session.drop(store)
