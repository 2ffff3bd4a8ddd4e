"""Explorer lists equal a polars filter of the same rows, on both databases, page by page."""

from datetime import timedelta

import polars as pl
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from observatory_core.accounts.permissions import Role
from observatory_core.accounts.scope import Scope
from observatory_core.base.errors import PermissionDenied, UserError
from observatory_core.filters.spec import FilterSpec
from observatory_core.traces.query import list_spans
from tests.helpers import child_of, span
from tests.reference import reference_ids
from tests.traces.conftest import MODELS, NOW, PROVIDERS, TAGS, TEXTS, globex_project

SETTINGS = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def all_rows(engine, scope, spec, **kw):
    """Walk every page; returns rows in order."""
    rows, cursor = [], None
    for _ in range(5000):  # a cursor that does not advance must fail the test, not hang it
        page = list_spans(engine, scope, spec, cursor=cursor, now=NOW, **kw)
        rows += page.rows
        if not page.next_cursor:
            return rows
        cursor = page.next_cursor
    raise AssertionError("pagination did not end")


@st.composite
def explorer_specs(draw):
    values = {"relative": draw(st.sampled_from(["24h", "3d", "7d", None]))}
    pick = lambda pool: tuple(draw(st.lists(st.sampled_from(pool), max_size=2, unique=True)))  # noqa: E731
    if draw(st.booleans()):
        values["models"] = pick([*MODELS, "missing-model"])
    if draw(st.booleans()):
        values["providers"] = pick(PROVIDERS)
    if draw(st.booleans()):
        values["operations"] = pick(["chat", "embeddings", "execute_tool", "invoke_agent"])
    if draw(st.booleans()):
        values["statuses"] = pick(["ok", "error", "unset"])
    if draw(st.booleans()):
        values["environments"] = pick(["production", "staging"])
    if draw(st.booleans()):
        values["user_ids"] = pick([f"user-{i}" for i in range(14)])
    if draw(st.booleans()):
        values["min_duration_ms"] = draw(st.floats(0, 2000))
    if draw(st.booleans()):
        values["max_cost_usd"] = draw(st.floats(0, 0.01))
    if draw(st.booleans()):
        values["min_total_tokens"] = draw(st.integers(0, 3000))
    if draw(st.booleans()):
        values["tags_any"] = pick(TAGS)
    if draw(st.booleans()):
        values["tags_all"] = pick(TAGS)
    if draw(st.booleans()):
        values["metadata"] = (
            draw(
                st.sampled_from(
                    [("region", "eu"), ("tier", "pro"), ('odd key "q"', "x"), ("nope", "x")]
                )
            ),
        )
    if draw(st.booleans()):
        text = draw(st.sampled_from([t for t in TEXTS if t]))
        start = draw(st.integers(0, len(text) - 3))
        values["search"] = text[start : start + draw(st.integers(3, 8))]
        if len(values["search"].strip()) < 3:
            values["search"] = "order"
    return FilterSpec(**values)


def examples(explorer):
    """Hypothesis settings per store: a statement on chDB costs milliseconds where SQLite's
    cost microseconds, so the span store's run draws fewer examples (the same assertions)."""
    return settings(SETTINGS, max_examples=10 if explorer["store"] == "chdb" else 40)


def test_every_page_walk_returns_exactly_the_reference_rows(explorer):
    @examples(explorer)
    @given(
        spec=explorer_specs(),
        limit=st.integers(1, 60),
        sort=st.sampled_from(["start_time", "duration_ms", "total_cost_usd", "total_tokens"]),
        direction=st.sampled_from(["asc", "desc"]),
    )
    def walk(spec, limit, sort, direction):
        # chDB's walks take pages of 5 or more (pages of 2 and 9 rows: the sort walks below
        # and test_detail)
        assume(explorer["store"] != "chdb" or limit >= 5)
        scope = Scope(org_id=explorer["acme"], role=Role.ADMIN)
        rows = all_rows(
            explorer["engine"], scope, spec, limit=limit, sort=sort, direction=direction
        )
        ids = [r["id"] for r in rows]
        assert len(ids) == len(set(ids)), "a row was visited twice"
        assert set(ids) == reference_ids(explorer["df"], spec, NOW, explorer["acme"])
        keys = [(r[sort], r["id"]) for r in rows]
        assert keys == sorted(keys, reverse=direction == "desc")

    walk()


@pytest.mark.parametrize("stretch", [1, 4])  # entries of the sort index walked per row wanted
@pytest.mark.parametrize("sort", ["duration_ms", "total_cost_usd", "total_tokens"])
@pytest.mark.parametrize("direction", ["asc", "desc"])
def test_walking_the_sort_index_first_gives_the_same_pages(
    explorer, monkeypatch, stretch, sort, direction
):
    """SQLite's bounded walk of the sort's index (short stretches here, so some pages come
    from it and some fall back) visits exactly the reference rows, in order. A store that
    walks no index reads the same pages at any stretch (on chDB: sorted pages of 9, newest
    first)."""
    from observatory_core.storage.stores import store_for
    from observatory_core.traces import query

    if not store_for(explorer["engine"]).walks_sort_index and stretch != 1:
        pytest.skip("this store walks no sort index: the stretch changes nothing")
    if explorer["store"] == "chdb" and direction != "desc":
        pytest.skip("on chDB, one direction (both are in the page walks)")

    monkeypatch.setattr(query, "_WALK_PER_ROW", stretch)
    scope = Scope(org_id=explorer["acme"], role=Role.ADMIN)
    for spec in (
        FilterSpec(relative=None),
        FilterSpec(relative="3d", models=(MODELS[0],)),
        FilterSpec(relative=None, statuses=("error",)),
    ):
        rows = all_rows(explorer["engine"], scope, spec, limit=9, sort=sort, direction=direction)
        assert [r["id"] for r in rows] and {r["id"] for r in rows} == reference_ids(
            explorer["df"], spec, NOW, explorer["acme"]
        )
        assert len(rows) == len({r["id"] for r in rows})
        keys = [(r[sort], r["id"]) for r in rows]
        assert keys == sorted(keys, reverse=direction == "desc")


def test_exact_count_matches(explorer):
    @examples(explorer)
    @given(spec=explorer_specs())
    def count(spec):
        scope = Scope(org_id=explorer["acme"], role=Role.ADMIN)
        page = list_spans(explorer["engine"], scope, spec, count=True, now=NOW, limit=5)
        assert page.total == len(reference_ids(explorer["df"], spec, NOW, explorer["acme"]))

    count()


def check_traces(explorer, scope, spec, sort, direction="desc", limit=7) -> None:
    """Traces mode walked page by page equals polars on the raw rows: the roots of the traces
    with a matching span, each once, in order, with their trees' totals (the scope's part of
    each tree), and the count."""

    df = explorer["df"].filter(pl.col("org_id") == scope.org_id)
    if scope.project_ids is not None:
        df = df.filter(pl.col("project_id").is_in(sorted(scope.project_ids)))
    engine = explorer["engine"]
    rows = all_rows(engine, scope, spec, mode="traces", sort=sort, direction=direction, limit=limit)
    ids = reference_ids(df, spec, NOW, scope.org_id)
    matching = df.filter(pl.col("id").is_in(list(ids)))["trace_id"].unique()
    roots = df.filter(
        pl.col("parent_span_id").is_null() & pl.col("trace_id").is_in(matching.implode())
    )
    assert len(rows) == len({r["trace_id"] for r in rows}), "a trace was listed twice"
    assert sorted(r["trace_id"] for r in rows) == sorted(roots["trace_id"])
    totals = df.group_by("trace_id").agg(
        pl.col("total_cost_usd").sum(),
        pl.col("total_tokens").sum(),
        pl.len(),
        (pl.col("status") == "error").sum().alias("errors"),
        (
            (pl.col("end_time").max() - pl.col("start_time").min()).dt.total_microseconds() / 1000
        ).alias("extent_ms"),
    )
    expected = {t: (c, k, n, e, x) for t, c, k, n, e, x in totals.iter_rows()}
    for r in rows:
        cost, tokens, count, errors, extent = expected[r["trace_id"]]
        assert r["total_cost_usd"] == pytest.approx(cost)
        assert (r["total_tokens"], r["span_count"], r["error_count"]) == (tokens, count, errors)
        assert r["duration_ms"] == pytest.approx(extent), "a trace lasts its whole tree"
    keys = [(r[sort], r["id"]) for r in rows]
    assert keys == sorted(keys, reverse=direction == "desc")
    counted = list_spans(engine, scope, spec, mode="traces", sort=sort, count=True, now=NOW)
    assert counted.total == roots.height


@pytest.mark.parametrize("sort", ["start_time", "duration_ms", "total_cost_usd", "total_tokens"])
@pytest.mark.parametrize(
    "spec",
    [
        FilterSpec(relative=None, models=("gpt-4o",)),
        FilterSpec(relative="3d", statuses=("error",)),
        FilterSpec(relative=None, search="refund"),
        FilterSpec(relative="3d"),  # time only: tree sorts read trace_totals by time
        FilterSpec(relative=None),
    ],
    ids=["model", "errors-3d", "search", "3d", "all-time"],
)
def test_traces_mode_lists_roots_with_tree_totals(explorer, spec, sort):
    scope = Scope(org_id=explorer["acme"], role=Role.ADMIN)
    check_traces(explorer, scope, spec, sort)


def test_traces_mode_walks_match_polars_for_any_filter_sort_and_direction(explorer):
    @examples(explorer)
    @given(
        spec=explorer_specs(),
        limit=st.integers(5, 30),
        sort=st.sampled_from(["start_time", "duration_ms", "total_cost_usd", "total_tokens"]),
        direction=st.sampled_from(["asc", "desc"]),
    )
    def walk(spec, limit, sort, direction):
        scope = Scope(org_id=explorer["acme"], role=Role.ADMIN)
        check_traces(explorer, scope, spec, sort, direction, limit)

    walk()


@pytest.mark.parametrize("sort", ["start_time", "total_cost_usd"])
def test_traces_mode_under_a_project_filter_or_a_project_limited_role(explorer, sort):
    """Many of these traces have spans in both projects: a project filter lists the traces
    with a match there, with their whole trees' totals; a user limited to one project sees
    only that project's part of each tree."""
    one = explorer["projects"][0]
    admin = Scope(org_id=explorer["acme"], role=Role.ADMIN)
    check_traces(explorer, admin, FilterSpec(relative="3d", project_ids=(one,)), sort)
    limited = Scope(org_id=explorer["acme"], role=Role.DEVELOPER, project_ids=frozenset({one}))
    check_traces(explorer, limited, FilterSpec(relative=None), sort)


def test_pages_stay_stable_while_new_spans_arrive(explorer):
    engine = explorer["engine"]
    scope = Scope(org_id=explorer["acme"], role=Role.ADMIN)
    spec = FilterSpec(relative="7d")
    expected = reference_ids(explorer["df"], spec, NOW, explorer["acme"])
    first = list_spans(engine, scope, spec, limit=10, now=NOW)
    org, project = explorer["acme"], explorer["projects"][0]
    newcomers = [
        span(org, project, NOW - timedelta(hours=h), trace_id=f"{9000 + h:032x}")
        for h in (1, 30, 100)
    ]
    explorer["write"](newcomers)
    try:
        seen, cursor = [r["id"] for r in first.rows], first.next_cursor
        while cursor:
            page = list_spans(engine, scope, spec, limit=10, cursor=cursor)
            seen += [r["id"] for r in page.rows]
            cursor = page.next_cursor
        assert len(seen) == len(set(seen)) and set(seen) == expected
    finally:
        explorer["remove"]([r["trace_id"] for r in newcomers])


@pytest.mark.parametrize("sort", ["total_cost_usd", "total_tokens", "duration_ms"])
def test_tree_sorted_pages_stay_stable_while_a_listed_trace_grows(explorer, sort):
    """A span joining a trace after the first page must not move that trace between pages (its
    totals and its extent as of the pin)."""
    engine = explorer["engine"]
    scope = Scope(org_id=explorer["acme"], role=Role.ADMIN)
    spec = FilterSpec(relative="7d")
    first = list_spans(engine, scope, spec, mode="traces", sort=sort, limit=5, now=NOW)
    everything = all_rows(engine, scope, spec, mode="traces", sort=sort, limit=5)
    cheapest = everything[-1]
    org, project = explorer["acme"], explorer["projects"][0]
    grown = span(
        org,
        project,
        NOW - timedelta(hours=2),
        trace_id=cheapest["trace_id"],
        parent_span_id=cheapest["span_id"],
        input_tokens=10**6,
        input_cost_usd=1000.0,
    )
    explorer["write"]([grown])
    try:
        seen, cursor = [r["trace_id"] for r in first.rows], first.next_cursor
        while cursor:
            page = list_spans(engine, scope, spec, mode="traces", sort=sort, limit=5, cursor=cursor)
            seen += [r["trace_id"] for r in page.rows]
            if cheapest["trace_id"] in [r["trace_id"] for r in page.rows]:
                row = next(r for r in page.rows if r["trace_id"] == cheapest["trace_id"])
                assert row[sort] == cheapest[sort]  # totals as of the pin
            cursor = page.next_cursor
        assert seen == [r["trace_id"] for r in everything]
        fresh = list_spans(engine, scope, spec, mode="traces", sort=sort, limit=1, now=NOW)
        assert fresh.rows[0]["trace_id"] == cheapest["trace_id"]  # a new first page sees it
    finally:
        explorer["remove_spans"]([grown["span_id"]], [grown["trace_id"]])


def test_a_trace_whose_cost_sums_in_another_order_is_listed_once(explorer):
    """Costs whose float sum depends on its order (0.1 + 0.2 + 0.03): the trace grows after the
    first page, its cost is then summed afresh, and it must keep its place, listed once."""
    org, project = globex_project(explorer)
    at = NOW - timedelta(hours=2)
    alone = {"environment": "cost-order"}  # these traces only
    top = span(org, project, at, input_cost_usd=10.0, **alone)
    bottom = span(org, project, at, input_cost_usd=0.001, **alone)
    root = span(org, project, at, input_cost_usd=0.1, **alone)

    def child(seconds: int, cost: float) -> dict:
        return child_of(root, at + timedelta(seconds=seconds), input_cost_usd=cost, **alone)

    ours = {top["trace_id"], bottom["trace_id"], root["trace_id"]}
    explorer["write"]([top, bottom, root, child(1, 0.2)])
    explorer["write"]([child(2, 0.03)])  # a later write: a partial row of its own
    try:
        scope = Scope(org_id=org, role=Role.ADMIN)
        spec = FilterSpec(relative="7d", environments=("cost-order",))
        walk = dict(mode="traces", sort="total_cost_usd", limit=2)  # ours second on page 1
        first = list_spans(explorer["engine"], scope, spec, now=NOW, **walk)
        explorer["write"]([child(3, 0.0)])  # grows after the pin: its cost is summed again
        seen, cursor = [r["trace_id"] for r in first.rows], first.next_cursor
        while cursor:
            page = list_spans(explorer["engine"], scope, spec, cursor=cursor, **walk)
            seen += [r["trace_id"] for r in page.rows]
            cursor = page.next_cursor
        assert seen == [top["trace_id"], root["trace_id"], bottom["trace_id"]]
    finally:
        explorer["remove"](sorted(ours))


@pytest.mark.parametrize("sort", ["start_time", "total_tokens"])
def test_a_trace_whose_root_arrives_after_the_pin_stays_off_the_pinned_pages(explorer, sort):
    """A trace is listed once its root has arrived: a root written after the first page keeps
    its trace off the later pages of that walk; a new walk lists it."""
    engine = explorer["engine"]
    scope = Scope(org_id=explorer["acme"], role=Role.ADMIN)
    spec = FilterSpec(relative="7d")
    org, project = explorer["acme"], explorer["projects"][0]
    trace, root_id = f"{0xABC:032x}", "e" * 16
    at = NOW - timedelta(hours=1)
    child = span(org, project, at, trace_id=trace, span_id="f" * 16, parent_span_id=root_id)
    root = span(org, project, at - timedelta(seconds=1), trace_id=trace, span_id=root_id)
    explorer["write"]([child])
    try:
        first = list_spans(engine, scope, spec, mode="traces", sort=sort, limit=5, now=NOW)
        explorer["write"]([root])
        seen, cursor = [r["trace_id"] for r in first.rows], first.next_cursor
        while cursor:
            page = list_spans(engine, scope, spec, mode="traces", sort=sort, limit=5, cursor=cursor)
            seen += [r["trace_id"] for r in page.rows]
            cursor = page.next_cursor
        assert trace not in seen and len(seen) == len(set(seen))
        fresh = all_rows(engine, scope, spec, mode="traces", sort=sort, limit=50)
        assert [r["span_count"] for r in fresh if r["trace_id"] == trace] == [2]
    finally:
        explorer["remove"]([trace])


def test_other_org_sees_none_of_these_rows(explorer):
    scope = Scope(org_id=explorer["globex"], role=Role.ADMIN)
    rows = all_rows(explorer["engine"], scope, FilterSpec(relative=None), limit=1000)
    assert rows and {r["trace_id"] for r in rows}.isdisjoint(
        set(explorer["df"].filter(explorer["df"]["org_id"] == explorer["acme"])["trace_id"])
    )
    foreign_project = Scope(
        org_id=explorer["globex"], role=Role.ADMIN, project_ids=frozenset(explorer["projects"])
    )
    assert all_rows(explorer["engine"], foreign_project, FilterSpec(relative=None)) == []


@pytest.mark.parametrize(
    "hostile",
    ["100%", "a_b", "back\\slash", "'; DROP TABLE spans; --", '"hello"', "LIKE '%'", "%%%", "___"],
)
def test_hostile_search_text_is_a_literal(explorer, hostile):
    scope = Scope(org_id=explorer["acme"], role=Role.ADMIN)
    spec = FilterSpec(relative=None, search=hostile)
    got = {r["id"] for r in all_rows(explorer["engine"], scope, spec, limit=1000)}
    assert got == reference_ids(explorer["df"], spec, NOW, explorer["acme"])


def test_roles_see_only_permitted_fields(explorer):
    engine = explorer["engine"]
    viewer_scope = Scope(org_id=explorer["acme"], role=Role.VIEWER)
    fields = ["start_time", "input_text", "total_cost_usd", "model"]
    # named explicitly, a hidden field is refused; the default columns leave it out
    with pytest.raises(PermissionDenied, match=r"total_cost_usd.*costs:read"):
        list_spans(engine, viewer_scope, FilterSpec(relative=None), fields=fields, now=NOW)
    viewer = list_spans(engine, viewer_scope, FilterSpec(relative=None), now=NOW)
    assert "total_cost_usd" not in viewer.fields and "total_cost_usd" not in viewer.rows[0]
    shown = list_spans(engine, viewer_scope, FilterSpec(relative=None), fields=fields[:2], now=NOW)
    assert "input_text" in shown.fields
    with pytest.raises(PermissionDenied, match="traces:read"):
        list_spans(engine, Scope(org_id=explorer["acme"], role=Role.BILLING), FilterSpec(), now=NOW)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"limit": 0}, "from 1 to 1000"),
        ({"limit": 1001}, "from 1 to 1000"),
        ({"sort": "name"}, "Cannot sort by 'name'"),
        ({"direction": "sideways"}, "'asc' or 'desc'"),
        ({"fields": ["password_hash"]}, "Unknown field 'password_hash'"),
        ({"cursor": "not-a-cursor"}, "cursor is not valid"),
        ({"cursor": "W10"}, "cursor is not valid"),
        ({"cursor": "x" * 5000}, "cursor is not valid"),
        ({"mode": "sessions"}, "'spans' or 'traces'"),
    ],
)
def test_bad_list_arguments_give_clear_messages(explorer, kwargs, message):
    scope = Scope(org_id=explorer["acme"], role=Role.ADMIN)
    with pytest.raises(UserError, match=message):
        list_spans(explorer["engine"], scope, FilterSpec(), now=NOW, **kwargs)


def test_cursor_of_another_sort_is_refused(explorer):
    scope = Scope(org_id=explorer["acme"], role=Role.ADMIN)
    page = list_spans(explorer["engine"], scope, FilterSpec(relative=None), limit=2, now=NOW)
    with pytest.raises(UserError, match="another sort order"):
        list_spans(
            explorer["engine"],
            scope,
            FilterSpec(relative=None),
            cursor=page.next_cursor,
            sort="duration_ms",
        )
