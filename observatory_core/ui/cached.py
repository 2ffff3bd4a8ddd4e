"""Streamlit caches over core reads. Recent data changes fast, so TTLs here are short."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import streamlit as st

from observatory_core.accounts.scope import Scope
from observatory_core.base.zones import Zone
from observatory_core.filters.spec import FilterSpec
from observatory_core.metrics.engine import MetricResult, run_metrics
from observatory_core.metrics.query import MetricQuery, query_from_json, query_to_json
from observatory_core.reports.attribution import Attribution, cost_attribution
from observatory_core.reports.overview import (
    BudgetBurn,
    Overview,
    budget_burn,
    common_errors,
    cost_per_day_by_model,
    period_overview,
    top,
)
from observatory_core.reports.summary import HomeSummary, home_summary
from observatory_core.reports.whatchanged import Change, Periods, headline_changes, what_changed
from observatory_core.traces.days import DayList, list_days
from observatory_core.traces.detail import TraceDetail, get_trace
from observatory_core.traces.query import Page, list_spans
from observatory_core.traces.values import distinct_values, project_choices
from observatory_core.ui.session import engine, span_engine


@st.cache_data(ttl=30, show_spinner="Counting the last 24 hours…")
def _home(scope: Scope, minute: str, zone: str = "UTC") -> HomeSummary:
    now = datetime.fromisoformat(minute)
    return home_summary(span_engine(), scope, now=now, zone=Zone(zone))


def home(scope: Scope, zone: Zone | None = None) -> HomeSummary:
    """Cached per minute: the numbers move with the clock but a rerun costs nothing."""
    return _home(scope, minute(), zone.name if zone else "UTC")


@st.cache_data(ttl=300, show_spinner=False)
def values(scope: Scope, column: str) -> list[str]:
    """Choices for a filter widget, the last 90 days' values (`traces/values.VALUE_DAYS`), from
    where spans are read (the span store when it is set, each span one stored row there); values
    appear slowly, so five minutes is fresh enough."""
    return distinct_values(span_engine(), scope, column)


@st.cache_data(ttl=300, show_spinner=False)
def projects(scope: Scope) -> dict[int, str]:
    return project_choices(engine(), scope)


@st.cache_data(ttl=15, show_spinner="Adding up the days…")
def trace_days(scope: Scope, spec_json: str, mode: str, zone: str) -> DayList:
    """The Traces list grouped by the reader's days, fresh for 15 s like its first page."""
    return list_days(
        span_engine(), scope, FilterSpec.from_json(spec_json), mode=mode, zone=Zone(zone)
    )


@st.cache_data(ttl=15, show_spinner="Loading spans…")
def span_page(
    scope: Scope,
    spec_json: str,
    mode: str,
    sort: str,
    direction: str,
    size: int,
    cursor: str | None,
    fields: tuple[str, ...] | None,
) -> Page:
    """A first page is fresh for 15 s; later pages are pinned by their cursor anyway."""
    return list_spans(
        span_engine(),
        scope,
        FilterSpec.from_json(spec_json),
        mode=mode,
        sort=sort,
        direction=direction,
        limit=size,
        cursor=cursor,
        fields=fields,
    )


@st.cache_data(ttl=30, show_spinner="Opening the trace…")
def trace(scope: Scope, trace_id: str) -> TraceDetail | None:
    return get_trace(span_engine(), scope, trace_id)


def _metrics(
    scope: Scope, query_json: str, minute: str, max_groups: int | None = None
) -> MetricResult:
    return run_metrics(
        span_engine(),  # spans and rollups where they are kept (docs/scale.md)
        scope,
        query_from_json(query_json),
        now=datetime.fromisoformat(minute),
        max_groups=max_groups,
    )


def _recent_metrics(
    scope: Scope, query_json: str, minute: str, max_groups: int | None = None
) -> MetricResult:
    return _metrics(scope, query_json, minute, max_groups)


def _past_metrics(
    scope: Scope, query_json: str, minute: str, max_groups: int | None = None
) -> MetricResult:
    return _metrics(scope, query_json, minute, max_groups)


# (ended over an hour ago, with a spinner) -> loader. Streamlit keys a cache by the function's
# name and source and recreates it when a decorator asks another TTL, so each TTL has a
# function of its own (one function under two TTLs emptied its cache at every switch); a
# spinner's choice shares the entries. The quiet loaders serve loads on threads of their own
# (a dashboard's charts), where a spinner would land wherever the page has got to.
_METRIC_LOADERS = {
    (history, spinner): st.cache_data(
        ttl=3600 if history else 30, show_spinner="Computing…" if spinner else False
    )(_past_metrics if history else _recent_metrics)
    for history in (False, True)
    for spinner in (False, True)
}


def metrics(
    scope: Scope, query: MetricQuery, max_groups: int | None = None, *, spinner: bool = True
) -> MetricResult:
    """Results whose range ends within the hour change as spans arrive (30 s TTL); ranges that
    ended earlier are history and keep for an hour."""
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    _, end = query.filters.window(now)
    history = end is not None and now - end > timedelta(hours=1)
    load = _METRIC_LOADERS[(history, spinner)]
    return load(scope, query_to_json(query), now.isoformat(), max_groups)


@st.cache_data(ttl=60, show_spinner="Comparing periods…")
def overview(scope: Scope, spec_json: str, minute: str, zone: str = "UTC") -> Overview:
    return period_overview(
        span_engine(),
        scope,
        FilterSpec.from_json(spec_json),
        now=datetime.fromisoformat(minute),
        zone=Zone(zone),
    )


@st.cache_data(ttl=60, show_spinner=False)
def ranking(scope: Scope, spec_json: str, dimension: str, by: str, minute: str) -> MetricResult:
    return top(
        span_engine(),
        scope,
        FilterSpec.from_json(spec_json),
        dimension,
        by,
        now=datetime.fromisoformat(minute),
    )


@st.cache_data(ttl=60, show_spinner=False)
def errors(scope: Scope, spec_json: str, minute: str):
    return common_errors(
        span_engine(), scope, FilterSpec.from_json(spec_json), now=datetime.fromisoformat(minute)
    )


@st.cache_data(ttl=60, show_spinner=False)
def daily_cost(scope: Scope, spec_json: str, minute: str, zone: str = "UTC") -> MetricResult:
    return cost_per_day_by_model(
        span_engine(),
        scope,
        FilterSpec.from_json(spec_json),
        now=datetime.fromisoformat(minute),
        zone=Zone(zone),
    )


@st.cache_data(ttl=60, show_spinner=False)
def burn(scope: Scope, minute: str, zone: str = "UTC") -> BudgetBurn:
    return budget_burn(
        engine(),  # the org's budget
        scope,
        now=datetime.fromisoformat(minute),
        zone=Zone(zone),
        spans=span_engine(),  # its costs, where spans and rollups are kept (docs/scale.md)
    )


@st.cache_data(ttl=60, show_spinner="Splitting the change…")
def change(
    scope: Scope,
    series: str,
    dimension: str,
    spec_json: str,
    periods: Periods | None,
    minute: str,
) -> Change:
    return what_changed(
        span_engine(),
        scope,
        series,
        dimension,
        FilterSpec.from_json(spec_json),
        periods,
        now=datetime.fromisoformat(minute),
    )


@st.cache_data(ttl=60, show_spinner="Finding what drove each change…")
def headlines(
    scope: Scope, spec_json: str, start: datetime, end: datetime, minute: str
) -> dict[str, Change]:
    return headline_changes(
        span_engine(),
        scope,
        FilterSpec.from_json(spec_json),
        start,
        end,
        now=datetime.fromisoformat(minute),
    )


def minute() -> str:
    return datetime.now(UTC).replace(second=0, microsecond=0).isoformat()


@st.cache_data(ttl=60, show_spinner="Splitting the period by the key…")
def attribution(scope: Scope, spec_json: str, key: str, minute: str) -> Attribution:
    return cost_attribution(
        span_engine(),
        scope,
        FilterSpec.from_json(spec_json),
        key,
        now=datetime.fromisoformat(minute),
    )
