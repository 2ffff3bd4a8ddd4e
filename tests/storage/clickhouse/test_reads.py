"""The scoped span list and its totals, against polars on the raw rows: every page in order,
each span once (a copy written by a racing writer included), and never another org's span."""

from __future__ import annotations

from datetime import timedelta

import polars as pl
import pytest

from observatory_core.accounts.permissions import Role
from observatory_core.accounts.scope import Scope
from observatory_core.base.errors import QueryTooSlow, UserError
from observatory_core.storage import budget
from observatory_core.storage.clickhouse import layout, reads
from observatory_core.storage.clickhouse.reads import (
    LIST_COLUMNS,
    After,
    Window,
    list_spans,
    span_totals,
)
from observatory_core.storage.clickhouse.writes import as_columns, write_spans
from tests.storage.clickhouse.conftest import END, demo_rows

ROWS = demo_rows(4000, seed=21)
FRAME = pl.DataFrame(ROWS, infer_schema_length=None)
ORGS = sorted(FRAME["org_id"].unique())
WINDOW = Window(END - timedelta(days=6), END - timedelta(hours=2))
COPIED = [r for r in ROWS if r["org_id"] == ORGS[0]][:40]
# the newest spans of another org's window, each written three more times
NEWEST = sorted(
    (r for r in ROWS if r["org_id"] == ORGS[1] and WINDOW.start <= r["start_time"] < WINDOW.end),
    key=lambda r: (r["start_time"], r["trace_id"], r["span_id"]),
    reverse=True,
)[:10]


@pytest.fixture(scope="module")
def store(chdb_store):
    assert write_spans(chdb_store, ROWS) == len(ROWS)
    # what two processes racing on the same spans leave: a second copy, a later version
    names = layout.span_column_names()
    for copies, version in ((COPIED, 2**62), *((NEWEST, 2**62 + k) for k in range(3))):
        chdb_store.client.insert(
            chdb_store.table("spans"),
            as_columns(copies, names, version, lambda org, project: 0),
            column_names=list(names),
            column_oriented=True,
        )
    return chdb_store


def _scope(org_id: int, projects=None) -> Scope:
    return Scope(
        org_id=org_id, role=Role.ADMIN, project_ids=projects
    )  # roles: test_bounds_and_roles.py


def _want(org_id: int, projects=None) -> pl.DataFrame:
    frame = FRAME.filter(
        pl.col("org_id") == org_id,
        pl.col("start_time") >= WINDOW.start,
        pl.col("start_time") < WINDOW.end,
    )
    if projects is not None:
        frame = frame.filter(pl.col("project_id").is_in(sorted(projects)))
    return frame.sort("start_time", "trace_id", "span_id", descending=True)


def _all_pages(store, scope: Scope, limit: int) -> tuple[list[dict], int]:
    rows, pages, after = [], 0, None
    while True:
        page = list_spans(store, scope, WINDOW, after=after, limit=limit)
        rows += page.rows
        pages += 1
        if page.next is None:
            return rows, pages
        assert len(page.rows) == limit
        after = page.next


@pytest.mark.parametrize("org_id", ORGS)
def test_every_page_in_order_matches_polars(store, org_id):
    want = _want(org_id)
    assert want.height > 300  # enough for several pages
    got, pages = _all_pages(store, _scope(org_id), limit=250)
    assert pages == want.height // 250 + 1
    keys = [(r["start_time"], r["trace_id"], r["span_id"]) for r in got]
    assert keys == list(want.select("start_time", "trace_id", "span_id").iter_rows())
    # the values as written, times in UTC
    expected = want.select(LIST_COLUMNS).to_dicts()
    for row, wanted in zip(got, expected, strict=True):
        assert row.keys() == set(LIST_COLUMNS)
        assert row["start_time"].utcoffset() == timedelta(0)
        assert _same(row, wanted)


def _same(row: dict, wanted: dict) -> bool:
    for name, value in wanted.items():
        if isinstance(value, float):
            assert row[name] == pytest.approx(value, rel=1e-12), name
        else:
            assert row[name] == value, name
    return True


@pytest.mark.parametrize("org_id", ORGS)
def test_totals_are_the_lists_count_tokens_and_cost(store, org_id):
    want = _want(org_id)
    totals = span_totals(store, _scope(org_id), WINDOW)
    assert (totals.spans, totals.tokens) == (want.height, want["total_tokens"].sum())
    assert totals.cost_usd == pytest.approx(want["total_cost_usd"].sum(), rel=1e-9)


def test_a_copy_from_a_racing_writer_is_stored_but_counted_once(store):
    org_id = ORGS[0]
    ((raw,),) = store.client.query(
        f"SELECT count() FROM {store.table('spans')} WHERE org_id = %(o)s", parameters={"o": org_id}
    ).result_rows
    assert raw == FRAME.filter(pl.col("org_id") == org_id).height + len(COPIED)
    copied = {(r["trace_id"], r["span_id"]) for r in COPIED}
    shown = [
        (r["trace_id"], r["span_id"])
        for r in _all_pages(store, _scope(org_id), limit=1000)[0]
        if (r["trace_id"], r["span_id"]) in copied
    ]
    assert (
        len(shown)
        == len(set(shown))
        == len([r for r in COPIED if WINDOW.start <= r["start_time"] < WINDOW.end])
    )


def test_small_pages_over_many_copies_still_show_each_span_once(store):
    """Four rows of each of the newest ten spans: a page of three reads past them."""
    want = _want(ORGS[1]).head(15)
    rows, after = [], None
    for _ in range(5):
        page = list_spans(store, _scope(ORGS[1]), WINDOW, after=after, limit=3)
        rows += page.rows
        after = page.next
    assert [(r["trace_id"], r["span_id"]) for r in rows] == list(
        want.select("trace_id", "span_id").iter_rows()
    )
    assert span_totals(store, _scope(ORGS[1]), WINDOW).spans == _want(ORGS[1]).height


def test_a_scope_with_projects_sees_only_them(store):
    org_id = ORGS[0]
    projects = frozenset(FRAME.filter(pl.col("org_id") == org_id)["project_id"].unique()[:2])
    want = _want(org_id, projects)
    got, _ = _all_pages(store, _scope(org_id, projects), limit=1000)
    assert [(r["trace_id"], r["span_id"]) for r in got] == list(
        want.select("trace_id", "span_id").iter_rows()
    )
    assert {r["project_id"] for r in got} == set(projects)
    assert span_totals(store, _scope(org_id, projects), WINDOW).spans == want.height


def test_no_org_sees_another_orgs_spans(store):
    traces = {org: set(FRAME.filter(pl.col("org_id") == org)["trace_id"]) for org in ORGS}
    for org in ORGS:
        got, _ = _all_pages(store, _scope(org), limit=1000)
        assert {r["org_id"] for r in got} == {org}
        others = set().union(*(t for o, t in traces.items() if o != org))
        assert not {r["trace_id"] for r in got} & others
    empty = list_spans(store, _scope(999), WINDOW)
    assert (empty.rows, empty.next) == ([], None)
    assert span_totals(store, _scope(999), WINDOW).spans == 0


def test_a_bare_org_id_is_not_a_scope(store):
    with pytest.raises(AttributeError):
        list_spans(store, ORGS[0], WINDOW)  # type: ignore[arg-type]


def test_a_page_ends_where_the_next_begins(store):
    scope = _scope(ORGS[0])
    first = list_spans(store, scope, WINDOW, limit=3)
    second = list_spans(store, scope, WINDOW, after=first.next, limit=3)
    both = list_spans(store, scope, WINDOW, limit=6)
    assert first.rows + second.rows == both.rows
    assert first.next == After(
        first.rows[-1]["start_time"], first.rows[-1]["trace_id"], first.rows[-1]["span_id"]
    )


@pytest.mark.parametrize(
    ("call", "says"),
    [
        (
            lambda s: list_spans(s, _scope(1), WINDOW, limit=0),
            "Page size must be a whole number from 1 to 1000",
        ),
        (lambda s: list_spans(s, _scope(1), WINDOW, limit=1001), "from 1 to 1000, got 1001"),
        (lambda s: list_spans(s, _scope(1), WINDOW, columns=("cost",)), "No span column 'cost'"),
        (lambda s: Window(END, END - timedelta(hours=1)), "must be before its end"),
        (lambda s: Window(END.replace(tzinfo=None), END), "needs times with a time zone"),
        (lambda s: Window(END - timedelta(days=401), END), "at most 400 days"),
    ],
)
def test_bad_input_says_what_to_fix(store, call, says):
    with pytest.raises(UserError, match=says):
        call(store)


def test_a_read_past_its_time_budget_is_stopped_by_the_engine(store):
    """The budget becomes the engine's max_execution_time (at least a second): a statement
    that sleeps 6 s is stopped and the caller told how to narrow the read."""
    slow = "SELECT sum(sleepEachRow(0.2)) FROM numbers(30) SETTINGS max_block_size = 1"
    with (
        budget.time_budget(0.5),
        pytest.raises(QueryTooSlow, match="ran past its time budget of 1 s"),
    ):
        reads._query(store, slow, {})
