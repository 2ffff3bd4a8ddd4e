"""The explorer's reads on the chosen store: the span and trace lists page by page, their
days, a trace's detail, the Traces page's loaders in traces mode, the sidebar's value lists and
the Users and Sessions lists (the routes and the pages' loaders)."""

from __future__ import annotations

from datetime import datetime, timedelta

import polars as pl
import pytest

from observatory_core.filters.spec import FilterSpec
from tests.api.span_store.conftest import (
    FORTNIGHT,
    SPAN_WINDOW,
    STORE_COST,
    STORE_MODEL,
    STORE_SESSION,
    STORE_USER,
)
from tests.helpers import admin_scope
from tests.reference import reference_ids
from tests.traces.conftest import NOW

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
