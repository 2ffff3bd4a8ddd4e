"""The reports and the alerts on the chosen store: the Overview's KPIs (/metrics/summary),
/changes, the report pages' loaders, the Live page's feed and the alert worker's round."""

from __future__ import annotations

from datetime import timedelta

import polars as pl

from observatory_core.filters.spec import FilterSpec
from observatory_core.storage.clickhouse.connect import open_span_store
from observatory_core.storage.clickhouse.writes import write_spans
from observatory_core.storage.engine import get_engine
from tests.api.span_store.conftest import FORTNIGHT, SPAN_WINDOW, STORE_MODEL, STORE_TRACES, _traces
from tests.helpers import admin_scope, span
from tests.metrics.reference import reference_metrics
from tests.traces.conftest import NOW


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
