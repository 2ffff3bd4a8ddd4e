"""Streamlit caches over core reads. Recent data changes fast, so TTLs here are short."""

from __future__ import annotations

from datetime import UTC, datetime

import streamlit as st

from observatory_core.filters.spec import FilterSpec
from observatory_core.scope import Scope
from observatory_core.summary import HomeSummary, home_summary
from observatory_core.traces.detail import TraceDetail, get_trace
from observatory_core.traces.query import Page, list_spans
from observatory_core.traces.values import distinct_values, project_choices
from observatory_core.ui.session import engine


@st.cache_data(ttl=30, show_spinner="Counting the last 24 hours…")
def _home(scope: Scope, minute: str) -> HomeSummary:
    now = datetime.fromisoformat(minute)
    return home_summary(engine(), scope, now=now)


def home(scope: Scope) -> HomeSummary:
    """Cached per minute: the numbers move with the clock but a rerun costs nothing."""
    minute = datetime.now(UTC).replace(second=0, microsecond=0).isoformat()
    return _home(scope, minute)


@st.cache_data(ttl=300, show_spinner=False)
def values(scope: Scope, column: str) -> list[str]:
    """Choices for a filter widget; values appear slowly, so five minutes is fresh enough."""
    return distinct_values(engine(), scope, column)


@st.cache_data(ttl=300, show_spinner=False)
def projects(scope: Scope) -> dict[int, str]:
    return project_choices(engine(), scope)


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
        engine(),
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
    return get_trace(engine(), scope, trace_id)
