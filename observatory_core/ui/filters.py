"""The filter sidebar: widgets <-> FilterSpec <-> URL query parameters.

The URL is the source of truth: a pasted link fills the widgets, and every change the user
makes is written back, so the address bar always reproduces the view.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import streamlit as st

from observatory_core.errors import UserError
from observatory_core.filters.spec import FilterSpec
from observatory_core.permissions import Permission
from observatory_core.scope import Scope
from observatory_core.storage.schema import OPERATIONS, STATUSES
from observatory_core.ui import cached

WINDOWS = {
    "15m": "Last 15 minutes",
    "1h": "Last hour",
    "24h": "Last 24 hours",
    "7d": "Last 7 days",
    "30d": "Last 30 days",
    "90d": "Last 90 days",
    "365d": "Last 365 days",
    "all": "All time",
    "custom": "Custom range",
}
_K = "flt_"  # widget keys


def _csv(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def url_params() -> dict[str, list[str]]:
    return {k: st.query_params.get_all(k) for k in st.query_params}


def _seed_widgets(spec: FilterSpec) -> None:
    """Put a spec's values into the widgets' session state (on first load or a new link)."""
    window = spec.relative or ("custom" if spec.start or spec.end else "all")
    state = st.session_state
    state[_K + "window"] = window if window in WINDOWS else "custom"
    now = datetime.now(UTC)
    state[_K + "from"] = (spec.start or now - timedelta(days=1)).date()
    state[_K + "to"] = (spec.end or now).date()
    for name in ("providers", "models", "operations", "environments", "statuses", "project_ids"):
        state[_K + name] = list(getattr(spec, name))
    for name in ("trace_ids", "session_ids", "user_ids", "tags_any", "tags_all"):
        state[_K + name] = ", ".join(getattr(spec, name))
    state[_K + "metadata"] = ", ".join(f"{k}={v}" for k, v in spec.metadata)
    state[_K + "search"] = spec.search or ""
    for name in ("duration_ms", "cost_usd", "total_tokens"):
        state[_K + "min_" + name] = getattr(spec, "min_" + name)
        state[_K + "max_" + name] = getattr(spec, "max_" + name)


def _spec_from_widgets() -> FilterSpec:
    s = st.session_state
    window = s[_K + "window"]
    values: dict = {"relative": None if window in ("all", "custom") else window}
    if window == "custom":
        values["start"] = datetime.combine(s[_K + "from"], time(), UTC)
        values["end"] = datetime.combine(s[_K + "to"], time(), UTC) + timedelta(days=1)
    for name in ("providers", "models", "operations", "environments", "statuses", "project_ids"):
        values[name] = tuple(s[_K + name])
    for name in ("trace_ids", "session_ids", "user_ids", "tags_any", "tags_all"):
        values[name] = _csv(s[_K + name])
    pairs = [p.split("=", 1) for p in _csv(s[_K + "metadata"])]
    if any(len(p) != 2 for p in pairs):
        raise UserError("Filter 'metadata': write key=value, separated by commas.")
    values["metadata"] = tuple((k.strip(), v.strip()) for k, v in pairs)
    values["search"] = s[_K + "search"] or None
    for name in ("duration_ms", "cost_usd", "total_tokens"):
        values["min_" + name] = s.get(_K + "min_" + name)
        values["max_" + name] = s.get(_K + "max_" + name)
    return FilterSpec(**values)


def _choice(label: str, name: str, options, format_func=str) -> None:
    """A multiselect whose options always include what a pasted link selected."""
    chosen = st.session_state.get(_K + name, [])
    options = list(dict.fromkeys([*options, *chosen]))
    st.multiselect(label, options, format_func=format_func, key=_K + name)


def _from_url_or_default(params: dict[str, list[str]]) -> FilterSpec:
    try:
        return FilterSpec.from_query_params(params)
    except UserError:
        return FilterSpec()


def sidebar(scope: Scope, page_params: frozenset[str]) -> FilterSpec:
    """Draw the filter widgets and return the spec they describe."""
    params = url_params()
    filter_params = {k: v for k, v in params.items() if k not in page_params}
    if st.session_state.get("_flt_seen") != filter_params:
        try:
            _seed_widgets(FilterSpec.from_query_params(filter_params))
        except UserError as exc:
            st.sidebar.error(f"The link's filters were not applied: {exc}")
            _seed_widgets(FilterSpec())
        st.session_state["_flt_seen"] = filter_params
    with st.sidebar:
        st.header("Filters")
        st.selectbox("Time", list(WINDOWS), format_func=WINDOWS.get, key=_K + "window")
        if st.session_state[_K + "window"] == "custom":
            left, right = st.columns(2)
            left.date_input("From", key=_K + "from")
            right.date_input("To (inclusive)", key=_K + "to")
        st.text_input("Search prompts and answers", key=_K + "search", placeholder="3+ characters")
        for name, label in (
            ("providers", "Provider"),
            ("models", "Model"),
            ("environments", "Environment"),
        ):
            _choice(label, name, cached.values(scope, name[:-1]))
        _choice("Operation", "operations", OPERATIONS)
        _choice("Status", "statuses", STATUSES)
        projects = cached.projects(scope)
        _choice("Project", "project_ids", list(projects), lambda p: projects.get(p, f"#{p}"))
        with st.expander("Ids, tags, metadata"):
            st.text_input("User ids (comma-separated)", key=_K + "user_ids")
            st.text_input("Session ids", key=_K + "session_ids")
            st.text_input("Trace ids", key=_K + "trace_ids")
            st.text_input("Tags: any of", key=_K + "tags_any")
            st.text_input("Tags: all of", key=_K + "tags_all")
            st.text_input("Metadata key=value", key=_K + "metadata", placeholder="region=eu-west-1")
        with st.expander("Duration, cost, tokens"):
            ranges = [("duration_ms", "Duration ms"), ("total_tokens", "Total tokens")]
            if scope.can(Permission.COSTS_READ):
                ranges.insert(1, ("cost_usd", "Cost USD"))
            for name, label in ranges:
                low, high = st.columns(2)
                low.number_input(f"{label} min", min_value=0.0, value=None, key=_K + "min_" + name)
                high.number_input(f"{label} max", min_value=0.0, value=None, key=_K + "max_" + name)
    try:
        spec = _spec_from_widgets()
    except UserError as exc:
        st.sidebar.error(str(exc))
        spec = _from_url_or_default(filter_params)
    wanted = spec.to_query_params()
    if wanted != filter_params:
        kept = {k: v for k, v in params.items() if k in page_params}
        st.query_params.from_dict({**wanted, **kept})
        st.session_state["_flt_seen"] = wanted
    return spec
