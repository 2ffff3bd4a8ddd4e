"""With OBSERVATORY_SPAN_STORE set, the explorer's routes (/traces, /traces/days,
/traces/{id}), /metrics, /metrics/summary, /changes, /users and /sessions read the span store
(and so do the pages' loaders), and everything
else DATABASE_URL: the rows answered are the span store's (its ids, and three spans only it
holds, outside the explorer's week), equal to polars on the raw rows, and unset, they are
DATABASE_URL's."""

from __future__ import annotations

import time
from datetime import datetime, timedelta

import polars as pl
import pytest
from sqlalchemy import text
from starlette.applications import Starlette

from observatory_core.api import context
from observatory_core.api import metrics as metrics_routes
from observatory_core.api.app import api_mount
from observatory_core.api.common import cache
from observatory_core.api.ratelimit import RateLimiter
from observatory_core.base.settings import get_settings
from observatory_core.filters.spec import FilterSpec
from observatory_core.ingest.apikeys import create_key
from observatory_core.ingest.spanrows import complete_row
from observatory_core.metrics.folding import OTHER
from observatory_core.storage.clickhouse.connect import open_span_store
from observatory_core.storage.clickhouse.current import close_span_stores
from observatory_core.storage.clickhouse.writes import write_spans
from observatory_core.storage.engine import get_engine
from observatory_core.storage.migrate import upgrade
from tests.api.conftest import ApiClient
from tests.chdb_store import copy_into_span_store, with_store_ids
from tests.helpers import SLOW_SQL, admin_scope, all_spans, make_org, span, write
from tests.metrics.reference import reference_metrics, reference_trace_metrics
from tests.reference import reference_ids
from tests.traces.conftest import NOW, build_rows

STORE_MODEL, STORE_COST = "store-only-model", 0.25
STORE_USER, STORE_SESSION = "store-only-user", "store-only-session"


@pytest.fixture(scope="module")
def routed(tmp_path_factory, chdb_session):
    url = f"sqlite:///{tmp_path_factory.mktemp('routed') / 'app.db'}"
    engine = get_engine(url)
    upgrade(engine)
    acme, projects = make_org(engine, "acme", projects=("bot", "search"))
    globex, globex_projects = make_org(engine, "globex")
    write(engine, build_rows(acme, projects, seed=5, traces=25, now=NOW))
    write(engine, build_rows(globex, globex_projects, seed=6, traces=10, now=NOW))
    store = copy_into_span_store(chdb_session, engine, "routed")
    # held by the span store only, ten days back: a tool call that counts, and a twin set aside
    # (`duplicate_of`) that counts in no figure
    tool = span(acme, projects[0], NOW - timedelta(days=10), operation="execute_tool")
    twin = span(
        acme,
        projects[0],
        NOW - timedelta(days=10),
        duplicate_of=tool["span_id"],
        duplicate_trace_id=tool["trace_id"],
        duration_ms=9e6,
    )
    # and an LLM call of a model only the span store has seen, for the reports
    call = span(
        acme,
        projects[0],
        NOW - timedelta(days=10),
        model=STORE_MODEL,
        input_cost_usd=STORE_COST,
        duration_ms=5.0,
        user_id=STORE_USER,
        session_id=STORE_SESSION,
    )
    extra = [tool, twin, call]
    assert write_spans(store, [complete_row(dict(r), 16_000) for r in extra]) == 3
    key = create_key(engine, admin_scope(acme), "read key", scopes=("read",), role="developer")
    df = all_spans(engine)
    yield {
        "url": url,
        "store_url": chdb_session.url(store.database),
        "key": key,
        "acme": acme,
        "sql_df": df,
        "store_df": with_store_ids(df, store),
    }
    close_span_stores()
    chdb_session.drop(store)


@pytest.fixture(params=["span store", "DATABASE_URL"])
def client(request, routed, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", routed["url"])
    if request.param == "span store":
        monkeypatch.setenv("OBSERVATORY_SPAN_STORE", routed["store_url"])
    else:
        monkeypatch.delenv("OBSERVATORY_SPAN_STORE", raising=False)
    get_settings.cache_clear()
    monkeypatch.setattr(context, "limiter", RateLimiter())
    cache._items.clear()
    client = ApiClient(Starlette(routes=[api_mount()]))
    client.headers["authorization"] = f"Bearer {routed['key']}"
    on_store = request.param == "span store"
    yield client, routed["store_df" if on_store else "sql_df"], on_store
    get_settings.cache_clear()


WEEK = FilterSpec(relative=None, start=NOW - timedelta(days=7), end=NOW)
WINDOW = f"start={WEEK.start.isoformat()}&end={WEEK.end.isoformat()}".replace("+", "%2B")


def test_the_list_reads_the_chosen_store_page_by_page(client, routed):
    client, df, _ = client
    spec = WEEK.replace(statuses=("ok",))
    ids, cursor = [], None
    while True:
        query = f"{WINDOW}&statuses=ok&limit=15&sort=duration_ms"
        page = client.get(f"/traces?{query}" + (f"&cursor={cursor}" if cursor else ""))
        assert page.status_code == 200, page.text
        ids += [r["id"] for r in page.json()["data"]]
        cursor = page.json()["next_cursor"]
        if not cursor:
            break
    assert len(ids) == len(set(ids)) and set(ids) == reference_ids(df, spec, NOW, routed["acme"])


def test_days_and_detail_read_the_chosen_store(client, routed):
    client, df, _ = client
    days = client.get(f"/traces/days?{WINDOW}&tz=UTC").json()
    want = reference_ids(df, WEEK, NOW, routed["acme"])
    assert sum(d["rows"] for d in days["data"]) == len(want)
    acme = df.filter(pl.col("org_id") == routed["acme"])
    trace_id = acme.sort("start_time")["trace_id"][-1]
    detail = client.get(f"/traces/{trace_id}")
    assert detail.status_code == 200, detail.text
    spans = detail.json()["data"]["spans"]
    want = acme.filter(pl.col("trace_id") == trace_id)["id"]
    assert sorted(s["id"] for s in spans) == sorted(want)


@pytest.mark.parametrize("sort", ["start_time", "total_cost_usd"])
def test_traces_mode_and_its_days_read_the_chosen_store(client, routed, sort):
    """Whole traces page by page, each listed once with its tree's span count and cost as
    polars sums them from the raw rows, and the traces-mode days adding up to the list."""
    client, df, _ = client
    rows, cursor = [], None
    while True:
        query = f"mode=traces&{WINDOW}&limit=6&sort={sort}"
        page = client.get(f"/traces?{query}" + (f"&cursor={cursor}" if cursor else ""))
        assert page.status_code == 200, page.text
        rows += page.json()["data"]
        if not (cursor := page.json()["next_cursor"]):
            break
    acme = df.filter(pl.col("org_id") == routed["acme"])
    matching = acme.filter(pl.col("id").is_in(list(reference_ids(df, WEEK, NOW, routed["acme"]))))
    trees = acme.filter(pl.col("trace_id").is_in(matching["trace_id"].implode()))
    rooted = trees.filter(pl.col("parent_span_id").is_null())["trace_id"].to_list()
    totals = trees.group_by("trace_id").agg(pl.len(), pl.col("total_cost_usd").sum())
    want = {t: (n, c) for t, n, c in totals.iter_rows() if t in rooted}
    assert rooted and len(rows) == len({r["trace_id"] for r in rows}) == len(want)
    for r in rows:
        assert r["span_count"] == want[r["trace_id"]][0]
        assert r["total_cost_usd"] == pytest.approx(want[r["trace_id"]][1])
    days = client.get(f"/traces/days?mode=traces&{WINDOW}&tz=UTC")
    assert days.status_code == 200, days.text
    assert sum(d["rows"] for d in days.json()["data"]) == len(rows)
    assert sum(d["total_cost_usd"] for d in days.json()["data"]) == pytest.approx(
        sum(c for _, c in want.values())
    )


FORTNIGHT = FilterSpec(relative=None, start=NOW - timedelta(days=14), end=NOW)
SPAN_WINDOW = f"start={FORTNIGHT.start.isoformat()}&end={NOW.isoformat()}".replace("+", "%2B")


@pytest.mark.parametrize("group_by", ["", "&group_by=model", "&group_by=user_id"])
def test_metrics_read_the_chosen_store(client, routed, group_by):
    """From rollups (no group-by, by model) and from raw spans (by user, which rollups do not
    carry): the span store's answer holds its own tool call, never the twin it set aside."""
    client, _, on_store = client
    series = ("span_count.count", "request_count.count", "total_cost.sum", "duration_ms.max")
    query = "".join(f"&series={s}" for s in series)
    got = client.get(f"/metrics?bucket=none&tz=UTC&{SPAN_WINDOW}{query}{group_by}")
    assert got.status_code == 200, got.text
    data = got.json()["data"]
    keys = (group_by.split("=")[1],) if group_by else ()
    assert data["source"] == ("raw" if "user_id" in group_by else "rollup")
    want = reference_metrics(routed["sql_df"], FORTNIGHT, NOW, routed["acme"], series, keys, None)
    rows = data["rows"]
    call, cost = (1, STORE_COST) if on_store else (0, 0.0)  # the LLM call only it holds
    assert sum(r["request_count.count"] for r in rows) == want["request_count.count"].sum() + call
    assert abs(sum(r["total_cost.sum"] for r in rows) - want["total_cost.sum"].sum() - cost) < 1e-9
    assert max(r["duration_ms.max"] or 0 for r in rows) == want["duration_ms.max"].max()
    extra = 2 if on_store else 0  # the tool call and the LLM call; the twin never
    assert sum(r["span_count.count"] for r in rows) == want["span_count.count"].sum() + extra


def _traces(df: pl.DataFrame, acme: int, start, end) -> int:
    spec = FilterSpec(relative=None, start=start, end=end)
    series = ("trace_count.count",)
    frame = reference_trace_metrics(df, spec, NOW, acme, series, (), None)
    return int(frame["trace_count.count"].sum())


# the traces only the span store holds, ten days back: the tool call's and the LLM call's (the
# twin's trace counts nowhere: its one span is set aside)
STORE_TRACES = 2


# every status: the same traces, read from the spans (a filter trace totals cannot answer)
EVERY_STATUS = "".join(f"&statuses={s}" for s in ("ok", "error", "unset"))


@pytest.mark.parametrize(("spans", "source"), [("", "rollup"), (EVERY_STATUS, "raw")])
def test_trace_metrics_read_the_chosen_store(client, routed, spans, source):
    """From the trace totals and from the spans: the span store's count holds its own traces."""
    client, _, on_store = client
    got = client.get(f"/metrics?bucket=none&series=trace_count&{SPAN_WINDOW}{spans}")
    assert got.status_code == 200, got.text
    assert got.json()["data"]["source"] == source
    (row,) = got.json()["data"]["rows"]
    want = _traces(routed["sql_df"], routed["acme"], FORTNIGHT.start, NOW)
    assert row["trace_count.count"] == want + (STORE_TRACES if on_store else 0)


def test_the_metrics_pages_loader_reads_the_chosen_store(client, routed):
    """The Metrics page's (and the dashboards') loader takes the same seam (`ui/session.py`)."""
    import streamlit as st

    from observatory_core.metrics.query import MetricQuery
    from observatory_core.ui import cached

    _, _, on_store = client
    st.cache_data.clear()
    query = MetricQuery(series=("span_count.count",), filters=FORTNIGHT, bucket=None)
    got = cached.metrics(admin_scope(routed["acme"]), query).frame["span_count.count"].item()
    want = reference_metrics(
        routed["sql_df"], FORTNIGHT, NOW, routed["acme"], query.series, (), None
    )["span_count.count"].item()
    assert got == want + (2 if on_store else 0)
    st.cache_data.clear()


def _requests(df: pl.DataFrame, acme: int, start, end) -> int:
    return int(
        reference_metrics(
            df,
            FilterSpec(relative=None, start=start, end=end),
            NOW,
            acme,
            ("request_count.count",),
            (),
            None,
        )["request_count.count"].item()
    )


def test_the_summary_reads_the_chosen_store(client, routed):
    """The Overview's KPIs (/metrics/summary): the span store's requests hold its own LLM call,
    its traces its own traces."""
    client, _, on_store = client
    got = client.get(f"/metrics/summary?{SPAN_WINDOW}")
    assert got.status_code == 200, got.text
    data = got.json()["data"]
    kpis = {k["key"]: k for k in data["kpis"]}
    before = FORTNIGHT.start - (NOW - FORTNIGHT.start)
    acme, df = routed["acme"], routed["sql_df"]
    call = 1 if on_store else 0
    assert kpis["requests"]["current"] == _requests(df, acme, FORTNIGHT.start, NOW) + call
    assert kpis["requests"]["previous"] == _requests(df, acme, before, FORTNIGHT.start)
    extra = STORE_TRACES if on_store else 0
    assert kpis["traces"]["current"] == _traces(df, acme, FORTNIGHT.start, NOW) + extra > 0
    assert kpis["traces"]["previous"] == _traces(df, acme, before, FORTNIGHT.start)
    assert "span store" not in data["source"]


def test_changes_read_the_chosen_store(client, routed):
    """/changes: the model only the span store has seen is a part of the change there (and its
    parts add up to the change), and no part of it on DATABASE_URL."""
    client, _, on_store = client
    half = NOW - timedelta(days=7)
    times = {
        "start": half.isoformat(),
        "end": NOW.isoformat(),
        "before_start": FORTNIGHT.start.isoformat(),
        "before_end": half.isoformat(),
    }
    window = "&".join(f"{k}={v}" for k, v in times.items()).replace("+", "%2B")
    got = client.get(f"/changes?series=request_count.count&dimension=model&top=20&{window}")
    assert got.status_code == 200, got.text
    data = got.json()["data"]
    acme, df = routed["acme"], routed["sql_df"]
    call = 1 if on_store else 0  # ten days back: in the baseline
    assert data["before"] == _requests(df, acme, FORTNIGHT.start, half) + call
    assert data["after"] == _requests(df, acme, half, NOW)
    parts = {c["value"]: c for c in data["contributions"]}
    assert abs(sum(c["change"] for c in parts.values()) - data["change"]) < 1e-9
    if on_store:
        assert parts[STORE_MODEL]["before"] == 1 and parts[STORE_MODEL]["change"] == -1
    else:
        assert STORE_MODEL not in parts


def test_the_traces_pages_loaders_in_traces_mode_read_the_chosen_store(client, routed):
    """The Traces page's list and days in traces mode (`ui/cached.py`): the LLM call's trace
    only the span store holds is listed there, with its cost, and only there."""
    import streamlit as st

    from observatory_core.ui import cached

    _, _, on_store = client
    st.cache_data.clear()
    scope, spec = admin_scope(routed["acme"]), FORTNIGHT.to_json()
    page = cached.span_page(scope, spec, "traces", "total_cost_usd", "desc", 1000, None, None)
    mine = [r for r in page.rows if r["model"] == STORE_MODEL]
    assert [r["total_cost_usd"] for r in mine] == ([STORE_COST] if on_store else [])
    # the days count the traces by their root, as the list by start does (a trace of a twin
    # set aside alone is listed there, with no total, and not by a tree total)
    by_start = cached.span_page(scope, spec, "traces", "start_time", "desc", 1000, None, None)
    days = cached.trace_days(scope, spec, "traces", "UTC")
    assert days.total == len(by_start.rows) and by_start.next_cursor is None
    st.cache_data.clear()


def test_the_report_pages_loaders_read_the_chosen_store(client, routed):
    """The Overview's, Home's, what changed's and cost attribution's loaders (`ui/cached.py`)
    take the same seam: the span store's own LLM call counts there, and only there."""
    import streamlit as st

    from observatory_core.ui import cached

    _, _, on_store = client
    st.cache_data.clear()
    scope, acme, df = admin_scope(routed["acme"]), routed["acme"], routed["sql_df"]
    call = 1 if on_store else 0
    spec, minute = FORTNIGHT.to_json(), NOW.isoformat()
    kpis = {k.key: k for k in cached.overview(scope, spec, minute).kpis}
    assert kpis["requests"].current == _requests(df, acme, FORTNIGHT.start, NOW) + call
    extra = STORE_TRACES if on_store else 0
    assert kpis["traces"].current == _traces(df, acme, FORTNIGHT.start, NOW) + extra
    parts = cached.attribution(scope, spec, "model", minute).frame
    assert (STORE_MODEL in parts["value"].to_list()) == on_store
    models = cached.daily_cost(scope, spec, minute).frame["model"].to_list()
    assert (STORE_MODEL in models) == on_store
    ranked = cached.ranking(scope, spec, "model", "requests", minute).frame["model"].to_list()
    assert (STORE_MODEL in ranked) == on_store
    home = cached.home(scope)  # the last 24 hours of the real clock: traces counted on both
    assert home.current.traces is not None
    st.cache_data.clear()


def test_the_alert_workers_round_reads_the_chosen_store(client, routed):
    """The worker's round (`alerts/loops.alert_round`): a rule over the half hour of the LLM
    call only the span store holds fires there and not on DATABASE_URL, and so does a rule on
    the traces only it holds. Rules and states are DATABASE_URL's either way."""
    from sqlalchemy import delete, select

    from observatory_core.alerts.loops import alert_round
    from observatory_core.alerts.rules import build_rule, create_rule
    from observatory_core.storage.schema import alert_events, alert_rules, alert_states

    _, _, on_store = client
    engine, scope = get_engine(routed["url"]), admin_scope(routed["acme"])
    at = NOW - timedelta(days=10, minutes=-30)  # half an hour after the call
    busy = create_rule(
        engine,
        scope,
        build_rule(
            name="any request",
            series="request_count.count",
            comparator=">",
            threshold=0,
            window_s=3600,
        ),
        now=at,
    )
    traced = build_rule(
        name="any trace", series="trace_count.count", comparator=">", threshold=0, window_s=3600
    )
    traced_id = create_rule(engine, scope, traced, now=at)
    try:
        alert_round(engine, "routed-worker", at)
        with engine.connect() as conn:
            rows = conn.execute(select(alert_states)).mappings().all()
        states = {r["rule_id"]: r for r in rows}
        assert states[busy]["state"] == ("firing" if on_store else "ok")
        assert states[busy]["last_value"] == (1 if on_store else 0)
        assert states[traced_id]["state"] == ("firing" if on_store else "ok")
        assert states[traced_id]["last_value"] == (STORE_TRACES if on_store else 0)
    finally:
        with engine.begin() as conn:
            for table in (alert_events, alert_states, alert_rules):
                conn.execute(delete(table))


class _DataClock(datetime):
    """The value lists' clock an hour past the data's NOW: they hold the last 90 days' values,
    and the data ends at a fixed date that the real clock leaves behind (in February 2027)."""

    @classmethod
    def now(cls, tz=None):
        return NOW + timedelta(hours=1)


def test_the_filter_widgets_lists_read_the_chosen_store(client, routed, monkeypatch):
    """The sidebar's value lists (`ui/cached.values`): the model only the span store has seen
    is offered there, and only there; the projects come from DATABASE_URL either way."""
    import streamlit as st

    from observatory_core.traces import values
    from observatory_core.ui import cached

    monkeypatch.setattr(values, "datetime", _DataClock)
    _, df, on_store = client
    st.cache_data.clear()
    scope = admin_scope(routed["acme"])
    models = cached.values(scope, "model")
    acme = df.filter(pl.col("org_id") == routed["acme"])
    want = set(acme["model"].drop_nulls()) | ({STORE_MODEL} if on_store else set())
    assert set(models) == want and len(models) == len(want)
    assert set(cached.projects(scope)) == set(acme["project_id"])
    st.cache_data.clear()


def test_users_and_sessions_read_the_chosen_store(client, routed):
    """/users, /sessions, /sessions/{id} and the Users and Sessions pages' loaders: the user
    and session of the LLM call only the span store holds are listed there, and only there;
    everyone else's figures are the same on both."""
    import streamlit as st

    from observatory_core.ui import people_view

    client, df, on_store = client
    acme = df.filter((pl.col("org_id") == routed["acme"]) & pl.col("duplicate_of").is_null())
    users = client.get(f"/users?{SPAN_WINDOW}&limit=1000")
    assert users.status_code == 200, users.text
    listed = {r["user_id"]: r for r in users.json()["data"]}
    assert set(listed) - {STORE_USER} == set(acme["user_id"].drop_nulls())
    per_user = acme.group_by("user_id").agg(pl.col("trace_id").n_unique()).rows()
    assert all(listed[u]["trace_count"] == n for u, n in per_user if u is not None)
    sessions = client.get(f"/sessions?{SPAN_WINDOW}&limit=1000").json()["data"]
    found = {r["session_id"]: r for r in sessions}
    assert set(found) - {STORE_SESSION} == set(acme["session_id"].drop_nulls())
    one = client.get(f"/sessions/{STORE_SESSION}")
    st.cache_data.clear()
    scope = admin_scope(routed["acme"])
    page = people_view.listed(
        "users", scope, FORTNIGHT.to_json(), "store-only", "user_id", "asc", 50, 0
    )
    conversation = people_view.session(scope, STORE_SESSION)
    st.cache_data.clear()
    if not on_store:
        assert STORE_USER not in listed and STORE_SESSION not in found
        assert one.status_code == 404 and conversation is None and page.rows == []
        return
    assert (listed[STORE_USER]["request_count"], listed[STORE_USER]["trace_count"]) == (1, 1)
    assert listed[STORE_USER]["total_cost_usd"] == pytest.approx(STORE_COST)
    assert found[STORE_SESSION]["total_cost_usd"] == pytest.approx(STORE_COST)
    assert one.status_code == 200, one.text
    assert one.json()["data"]["users"] == [STORE_USER] and one.json()["data"]["trace_count"] == 1
    assert [r["user_id"] for r in page.rows] == [STORE_USER]
    assert conversation.trace_count == 1 and conversation.total_cost_usd == pytest.approx(
        STORE_COST
    )


def test_the_live_pages_feed_reads_the_chosen_store(client, routed, monkeypatch):
    """The Live page's feed (`ui/live_view.feed`, its last 15 minutes on the real clock): a
    call the span store alone holds, a minute old, is listed there and only there; the export
    jobs still come from DATABASE_URL."""
    from datetime import UTC, datetime

    from observatory_core.storage.clickhouse.current import span_store
    from observatory_core.ui import live_view

    _, _, on_store = client
    feeds = []

    def spy(*args, **kw):
        feeds.append(live_view_feed(*args, **kw))
        return feeds[-1]

    live_view_feed = live_view.live_feed
    monkeypatch.setattr(live_view, "live_feed", spy)
    store = span_store() or open_span_store(routed["store_url"])
    project = int(routed["store_df"].filter(pl.col("org_id") == routed["acme"])["project_id"][0])
    fresh = span(routed["acme"], project, datetime.now(UTC) - timedelta(minutes=1), model="live")
    write_spans(store, [fresh])
    try:
        # the page's fragment as it runs each refresh (st.fragment's own wrapper only
        # schedules it, outside a page run)
        live_view.feed.__wrapped__(admin_scope(routed["acme"]), FilterSpec())
    finally:
        store.client.command(
            f"DELETE FROM {store.table('spans')} WHERE trace_id = {{t:String}}",
            parameters={"t": fresh["trace_id"]},
        )
    (feed,) = feeds
    assert [r["trace_id"] for r in feed.spans] == ([fresh["trace_id"]] if on_store else [])
    assert "exports" in feed.shown


# Issue 25's limits hold on the span store too: a grouping past the cap is folded into
# "(other)" by the engine (the parts add up to the whole), an answer past the cell cap is
# refused with how to narrow it, and a read past its budget is stopped with a 503.


def test_a_grouping_past_the_cap_is_folded_into_other_on_the_chosen_store(
    client, routed, monkeypatch
):
    client, _, on_store = client
    monkeypatch.setenv("OBSERVATORY_METRICS_MAX_GROUPS", "3")
    get_settings.cache_clear()
    got = client.get(
        f"/metrics?bucket=none&tz=UTC&{SPAN_WINDOW}&series=request_count.count"
        "&series=duration_ms.p99&group_by=model&group_by=user_id"
    )
    assert got.status_code == 200, got.text
    data = got.json()["data"]
    series = ("request_count.count",)
    keys = ("model", "user_id")
    want = reference_metrics(routed["sql_df"], FORTNIGHT, NOW, routed["acme"], series, keys, None)
    extra = 1 if on_store else 0  # the LLM call only the span store holds, a group of its own
    rows = data["rows"]
    assert len(rows) == 4 and sum(r["model"] == OTHER for r in rows) == 1
    assert data["folded_groups"] == want.height + extra - 3
    assert sum(r["request_count.count"] for r in rows) == want["request_count.count"].sum() + extra


def test_an_answer_past_the_cell_cap_is_refused_on_the_chosen_store(client, routed, monkeypatch):
    """Daily buckets by model: a cap one cell short of the store's own groups is refused before
    the read, saying the buckets and groups it counted (the span store's model one more), and a
    cap of exactly that many cells is answered."""
    client, _, on_store = client
    series = ("request_count.count",)
    want = reference_metrics(
        routed["sql_df"], FORTNIGHT, NOW, routed["acme"], series, ("model",), None
    )
    groups = want.height + (1 if on_store else 0)  # the model only the span store has seen
    last = FORTNIGHT.end - timedelta(microseconds=1)
    days = (last.date() - FORTNIGHT.start.date()).days + 1  # UTC days the fortnight touches
    url = f"/metrics?bucket=1day&tz=UTC&{SPAN_WINDOW}&series=request_count.count&group_by=model"
    monkeypatch.setenv("OBSERVATORY_METRICS_MAX_CELLS", str(days * groups - 1))
    get_settings.cache_clear()
    got = client.get(url)
    assert got.status_code == 400, got.text
    message = got.json()["error"]["message"]
    assert f"({days} buckets x {groups}" in message and "Narrow it" in message, message
    monkeypatch.setenv("OBSERVATORY_METRICS_MAX_CELLS", str(days * groups))
    get_settings.cache_clear()
    cache._items.clear()
    assert client.get(url).status_code == 200


# a statement the engine runs for 6 s unless stopped (ClickHouse's sleep is per row, at most 3 s)
STORE_SLOW = "SELECT sum(sleepEachRow(0.2)) FROM numbers(30) SETTINGS max_block_size = 1"


def test_a_read_past_its_budget_answers_503_on_the_chosen_store(client, monkeypatch):
    """The request's budget reaches the span store's engine (max_execution_time, at least a
    second): stopped, answered 503 with Retry-After within the budget and a second (measured
    1.0-1.2 s), and the next request is answered."""
    client, _, on_store = client
    monkeypatch.setenv("OBSERVATORY_READ_BUDGET_S", "1")
    get_settings.cache_clear()
    real = metrics_routes.run_metrics

    def slow(engine, *_args, **_kwargs):
        with engine.connect() as conn:
            conn.execute(text(STORE_SLOW if on_store else SLOW_SQL["sqlite"]))

    monkeypatch.setattr(metrics_routes, "run_metrics", slow)
    started = time.monotonic()
    got = client.get(f"/metrics?series=request_count.count&{SPAN_WINDOW}")
    elapsed = time.monotonic() - started
    assert got.status_code == 503, got.text
    assert got.json()["error"]["code"] == "timeout" and got.headers["Retry-After"]
    assert elapsed < 1 + 1, f"answered after {elapsed:.1f} s"
    monkeypatch.setattr(metrics_routes, "run_metrics", real)
    monkeypatch.delenv("OBSERVATORY_READ_BUDGET_S")
    get_settings.cache_clear()
    assert client.get(f"/metrics?series=request_count.count&{SPAN_WINDOW}").status_code == 200


def test_a_read_past_its_memory_bound_is_a_sentence_not_a_500(client, monkeypatch):
    """A read the span store stops at its memory bound (at 10M spans a 30-day page's
    newest-copy pick, before schema version 7, passed the 2 GiB of one read) answers 400 with what to narrow, in spans
    and traces mode; the next request is answered. (A spans-mode page by start time is one
    top-n statement since schema version 8: on this small store it allocates too little for
    the engine's memory tracking to stop it, and is answered even at this bound.)"""
    from observatory_core.storage.clickhouse import reads

    client, _, on_store = client
    bound = reads.READ_MEMORY
    monkeypatch.setattr(reads, "READ_MEMORY", 64 * 1024)  # far below any read's needs
    for route in (f"/traces?{SPAN_WINDOW}&sort=duration_ms", f"/traces?{SPAN_WINDOW}&mode=traces"):
        got = client.get(route)
        if not on_store:  # SQLite has no per-read memory bound: answered as ever
            assert got.status_code == 200, got.text[:300]
            continue
        assert got.status_code == 400, (route, got.status_code, got.text[:300])
        error = got.json()["error"]
        assert error["code"] == "too_large" and "shorter time range" in error["message"]
        assert "Code: 241" not in got.text and "SELECT" not in got.text
    monkeypatch.setattr(reads, "READ_MEMORY", bound)
    assert client.get(f"/traces?{SPAN_WINDOW}").status_code == 200
