"""The page caches: a metrics answer read once is not read again within its TTL, whichever
other answers are read in between (a past range and a recent one keep caches of their own)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import streamlit as st

from observatory_core.accounts.permissions import Role
from observatory_core.accounts.scope import Scope
from observatory_core.filters.spec import FilterSpec
from observatory_core.metrics.query import MetricQuery
from observatory_core.ui import cached


def test_recent_and_past_answers_do_not_empty_each_others_cache(monkeypatch):
    calls: list[str] = []

    def run_metrics(engine, scope, query, now, max_groups):
        calls.append(query.filters.relative or "past")
        return f"answer {len(calls)}"

    monkeypatch.setattr(cached, "run_metrics", run_metrics)
    monkeypatch.setattr(cached, "span_engine", lambda: None)
    st.cache_data.clear()
    scope = Scope(org_id=1, role=Role.ADMIN)
    recent = MetricQuery(series=("request_count.count",), filters=FilterSpec(relative="24h"))
    end = datetime.now(UTC) - timedelta(days=2)
    past = MetricQuery(
        series=("request_count.count",),
        filters=FilterSpec(relative=None, start=end - timedelta(days=1), end=end),
    )
    for _ in range(3):  # the caches are keyed by the minute: all five reads within one
        calls.clear()
        st.cache_data.clear()
        minute = cached.minute()
        first = [cached.metrics(scope, recent), cached.metrics(scope, past)]
        again = [
            cached.metrics(scope, recent),
            cached.metrics(scope, past, spinner=False),  # a dashboard's quiet loader
            cached.metrics(scope, recent, spinner=False),
        ]
        if cached.minute() == minute:
            break
    assert calls == ["24h", "past"]
    assert again == [first[0], first[1], first[0]]
    st.cache_data.clear()
