"""Traces mode by a tree total reads each matching trace's `trace_totals` partial rows added up
once per trace (`trace_totals.summed_per_trace`): the same totals as polars on the raw spans,
whatever the inserts and projects the rows came from, the root's hashed id and first write,
and no root while a trace's root has not arrived."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
import pytest
from sqlalchemy import select

from observatory_core.storage.clickhouse.layout import SPAN_ID_SQL
from observatory_core.storage.clickhouse.trace_totals import partial_rows, summed_per_trace
from observatory_core.storage.clickhouse.writes import write_spans
from observatory_core.storage.schema import spans as schema_spans
from tests.helpers import child_of, span

NOW = datetime(2026, 11, 20, 12, tzinfo=UTC)
ORG = 11


def _trace(trace: str, project: int, hours: float, cost: float) -> dict:
    return span(
        ORG,
        project,
        NOW - timedelta(hours=hours),
        trace_id=trace,
        span_id=trace[:16],
        total_cost_usd=cost,
        total_tokens=int(cost * 1000),
    )


@pytest.fixture(scope="module")
def written(chdb_store):
    """Three traces written in several inserts (one partial row each until parts merge): one
    in one project, one spread over two projects, one whose root arrives last."""
    one, two, late = _trace("a" * 32, 1, 3, 0.5), _trace("b" * 32, 1, 2, 0.25), None
    inserts = [
        [one, child_of(one, NOW - timedelta(hours=2.5), total_cost_usd=0.125, status="error")],
        [two, child_of(two, NOW - timedelta(hours=1.5), total_cost_usd=0.75)],
        [child_of(one, NOW - timedelta(hours=2), total_cost_usd=1.0, total_tokens=7)],
        [{**child_of(two, NOW - timedelta(hours=1), total_cost_usd=2.0), "project_id": 2}],
    ]
    late = _trace("c" * 32, 2, 1, 4.0)
    inserts.append([child_of(late, NOW - timedelta(minutes=30), total_cost_usd=0.5)])
    for rows in inserts:
        write_spans(chdb_store, rows)
    spans = pl.DataFrame([r for rows in inserts for r in rows])
    rootless = summed(chdb_store)["c" * 32]
    write_spans(chdb_store, [late])  # the root last
    return pl.concat([spans, pl.DataFrame([late])], how="diagonal_relaxed"), rootless


def summed(store) -> dict[str, dict]:
    query = summed_per_trace([partial_rows.c.org_id == ORG])
    with store.engine.connect() as conn:
        return {r["trace_id"]: dict(r) for r in conn.execute(query).mappings()}


def test_each_trace_is_its_spans_added_up(chdb_store, written):
    spans, _ = written
    parts = chdb_store.client.query(
        f"SELECT count() FROM {chdb_store.table('trace_totals')} WHERE org_id = {ORG}"
    ).result_rows[0][0]
    assert parts > 3, "the traces' rows are still partial (one per insert and project)"
    expected = spans.group_by("trace_id").agg(
        pl.col("total_cost_usd").sum(),
        pl.col("total_tokens").sum(),
        pl.len().alias("span_count"),
        (pl.col("status") == "error").sum().alias("error_count"),
        pl.col("start_time").min().alias("first_start"),
        pl.col("end_time").max().alias("last_end"),
    )
    got = summed(chdb_store)
    assert set(got) == set(expected["trace_id"])
    for row in expected.iter_rows(named=True):
        mine = got[row["trace_id"]]
        assert mine["total_cost_usd"] == pytest.approx(row["total_cost_usd"])
        assert (mine["total_tokens"], mine["span_count"], mine["error_count"]) == (
            row["total_tokens"],
            row["span_count"],
            row["error_count"],
        )
        extent = [t.replace(tzinfo=UTC) for t in (mine["first_start"], mine["last_end"])]
        assert extent == [row["first_start"], row["last_end"]]  # read as the driver's UTC


def test_the_root_is_its_stored_id_and_first_write_once_it_has_arrived(chdb_store, written):
    _, rootless = written
    assert (rootless["root_id"], rootless["root_arrival"]) == (None, None)
    roots = chdb_store.client.query(
        f"SELECT trace_id, {SPAN_ID_SQL.format(t='')}, version FROM "
        f"{chdb_store.table('spans')} WHERE org_id = {ORG} AND parent_span_id IS NULL"
    ).result_rows
    got = summed(chdb_store)
    assert {t: (got[t]["root_id"], got[t]["root_arrival"]) for t in got} == {
        t: (i, v) for t, i, v in roots
    }
    newest = chdb_store.client.query(
        f"SELECT trace_id, max(version) FROM {chdb_store.table('spans')} "
        f"WHERE org_id = {ORG} GROUP BY trace_id"
    ).result_rows
    assert {t: got[t]["newest"] for t in got} == dict(newest)


def test_a_scope_limited_to_a_project_adds_up_its_part_of_each_tree(chdb_store, written):
    spans, _ = written
    query = summed_per_trace([partial_rows.c.org_id == ORG, partial_rows.c.project_id == 2])
    with chdb_store.engine.connect() as conn:
        got = {r.trace_id: r.total_cost_usd for r in conn.execute(select(query.subquery()))}
    part = (
        spans.filter(pl.col("project_id") == 2)
        .group_by("trace_id")
        .agg(pl.col("total_cost_usd").sum())
    )
    assert got == pytest.approx(dict(part.iter_rows()))


def test_only_the_traces_asked_for_are_added_up(chdb_store, written):
    """`traces`: a set of trace ids read from the spans, as the explorer's matching traces."""
    spans, _ = written
    late_ones = select(schema_spans.c.trace_id).where(
        schema_spans.c.org_id == ORG, schema_spans.c.start_time >= NOW - timedelta(hours=1.25)
    )
    query = summed_per_trace([partial_rows.c.org_id == ORG], late_ones)
    with chdb_store.engine.connect() as conn:
        got = {r.trace_id: r.total_cost_usd for r in conn.execute(select(query.subquery()))}
    recent = spans.filter(pl.col("start_time") >= NOW - timedelta(hours=1.25))["trace_id"]
    whole = spans.filter(pl.col("trace_id").is_in(recent.implode())).group_by("trace_id")
    expected = dict(whole.agg(pl.col("total_cost_usd").sum()).iter_rows())
    assert set(got) == {"b" * 32, "c" * 32} == set(expected)
    assert got == pytest.approx(expected), "each trace whole, not only its recent spans"


TIED_ORG = 12  # the ties' traces: an org of their own


@pytest.fixture(scope="module")
def tied(chdb_store):
    """Two costly traces, then eight of one cost (a tie the first page's cut falls in), then
    two cheap ones; each root and its child written apart (two partial rows), one tied trace's
    child in another project. The polars reference: each trace's cost over its spans, and its
    root's id as this store keeps it (the ranking's tie-break)."""
    costs = [3.0, 2.5, *[1.0] * 8, 0.5, 0.25]
    roots = [
        span(
            TIED_ORG,
            1,
            NOW - timedelta(hours=2, minutes=i),
            trace_id=f"{i + 1:032x}",
            total_cost_usd=cost / 2,
        )
        for i, cost in enumerate(costs)
    ]
    children = [
        child_of(r, r["start_time"] + timedelta(seconds=1), total_cost_usd=r["total_cost_usd"])
        for r in roots
    ]
    children[4]["project_id"] = 2
    write_spans(chdb_store, roots)
    write_spans(chdb_store, children)
    rows = roots + children
    ids = chdb_store.client.query(
        f"SELECT trace_id, {SPAN_ID_SQL.format(t='')} FROM {chdb_store.table('spans')} "
        f"WHERE org_id = {TIED_ORG} AND parent_span_id IS NULL"
    ).result_rows
    roots = pl.DataFrame(ids, schema=["trace_id", "root_id"], orient="row")
    totals = pl.DataFrame(rows).group_by("trace_id").agg(pl.col("total_cost_usd").sum())
    return totals.join(roots, on="trace_id").with_columns(pl.col("total_cost_usd").round(9))


@pytest.mark.parametrize("direction", ["desc", "asc"])
def test_a_first_page_cut_among_ties_is_the_ranking_by_cost_then_root(chdb_store, tied, direction):
    """The first page ranks the traces by cost alone, keeps those tied with the last one it
    needs, and breaks the ties by root id only then (`tree_ranking._first_of_stored`): page
    after page the order polars gives by (cost, root id), the cut inside the tie."""
    from observatory_core.accounts.permissions import Role
    from observatory_core.accounts.scope import Scope
    from observatory_core.filters.spec import FilterSpec
    from observatory_core.traces.query import list_spans

    scope = Scope(org_id=TIED_ORG, role=Role.ADMIN)
    window = FilterSpec(relative=None, start=NOW - timedelta(hours=3), end=NOW)
    walk = dict(mode="traces", sort="total_cost_usd", direction=direction, limit=3, now=NOW)
    page = list_spans(chdb_store.engine, scope, window, **walk)
    first = [r["trace_id"] for r in page.rows]
    listed = list(first)
    while page.next_cursor:
        page = list_spans(chdb_store.engine, scope, window, cursor=page.next_cursor, **walk)
        listed += [r["trace_id"] for r in page.rows]
    expected = tied.sort(["total_cost_usd", "root_id"], descending=direction == "desc")[
        "trace_id"
    ].to_list()
    assert first == expected[:3]
    assert listed == expected
