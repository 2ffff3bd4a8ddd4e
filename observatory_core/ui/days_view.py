"""The Traces list grouped by the reader's local day (`traces/days.py`): a row per day with
its spans or traces, cost (when the role sees costs), errors and p95 latency; selecting a day
narrows the list to that day (start and end in the URL, the sidebar's own custom range)."""

from __future__ import annotations

import polars as pl
import streamlit as st

from observatory_core.accounts.scope import Scope
from observatory_core.filters.spec import FilterSpec
from observatory_core.traces.days import DayList
from observatory_core.ui import cached, format, tables
from observatory_core.ui.zone import current_zone

PARAM = "by"  # ?by=day: the grouped view, kept in the URL
UNITS = {"rows": "count", "total_cost_usd": "usd", "error_count": "count", "p95_duration_ms": "ms"}


def labels(mode: str, zone_name: str) -> dict[str, str]:
    return {
        "day": f"Day ({zone_name})",
        "rows": mode.title(),
        "total_cost_usd": "Cost",
        "error_count": "Errors",
        "p95_duration_ms": "p95 latency (ms)",
    }


def day_frame(days: DayList) -> pl.DataFrame:
    """One row per local day, newest first, with the figures the role may see."""
    columns = ["day", "rows", "total_cost_usd", "error_count", "p95_duration_ms"]
    shown = [c for c in columns if c != "total_cost_usd" or days.costs_shown]
    return pl.DataFrame([{c: d[c] for c in shown} for d in days.days])


def grouped(scope: Scope, spec: FilterSpec, mode: str) -> None:
    """The per-day table of the filtered list; a selected day narrows the list to it."""
    zone = current_zone()
    days = cached.trace_days(scope, spec.to_json(), mode, zone.name)
    if not days.days:
        st.info(
            "No spans match these filters. Widen the time window or clear a filter in the sidebar.",
            icon=":material/search_off:",
        )
        return
    frame = day_frame(days)
    names = labels(mode, zone.name)
    shown, config = format.table_columns(frame, UNITS, names)
    config["day"] = st.column_config.DateColumn(names["day"], format="ddd YYYY-MM-DD")
    chosen = tables.selectable(shown, config, "days_tbl")
    st.caption(
        f"{days.total:,} {mode} over {len(days.days):,} days of {zone.name} · a day's "
        f"{mode} are those the list holds that start on it · click a day to list it"
    )
    if chosen:
        narrow_to(days.days[chosen[0]], spec)


def narrow_to(day: dict, spec: FilterSpec) -> None:
    """List that local day: the sidebar's range becomes the day (its own 23, 24 or 25 hours),
    every other filter kept, the grouped view left."""
    q = st.query_params
    params = spec.replace(relative=None, start=day["start"], end=day["end"]).to_query_params()
    kept = {k: q.get_all(k) for k in q if k in ("mode", "sort", "dir")}
    q.from_dict({**params, **kept})
    st.rerun()
