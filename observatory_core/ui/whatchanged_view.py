"""Pieces of the What changed page and of the Overview's "what drove it": controls read from
and written to the link, the waterfall, the table, and the headline contributors."""

from __future__ import annotations

from datetime import datetime

import plotly.graph_objects as go
import polars as pl
import streamlit as st

from observatory_core.accounts.scope import Scope
from observatory_core.accounts.visibility import can_see, metric_visible
from observatory_core.base.errors import UserError
from observatory_core.filters.spec import FilterSpec, parse_time
from observatory_core.metrics.catalog import DIMENSION_FIELDS, DIMENSIONS, METRICS
from observatory_core.reports.significance import HELP
from observatory_core.reports.whatchanged import (
    NOT_SPLIT,
    PARAMS,
    SHIFT_SHARE,
    Change,
    Periods,
    link_params,
    plan,
    splittable,
)
from observatory_core.ui import cached, format
from observatory_core.ui.filters import url_params
from observatory_core.ui.overview_view import PERIODS
from observatory_core.ui.zone import range_text

PAGE = "pages/what_changed.py"
LINK_TIMES = ("start", "end", "before_start", "before_end")
DEFAULT_SERIES = "request_count.count"


def _series_label(series: str) -> str:
    metric, agg = series.split(".")
    m = METRICS[metric]
    if agg in ("count", "avg") and m.unit not in ("usd", "tokens", "ms"):
        return m.label
    return f"{m.label}: {'total' if agg == 'sum' else 'average'}"


def _choice(name: str, options: list[str], default: str) -> str:
    """The link's value when it is one of `options`, else `default`."""
    value = st.query_params.get(name)
    return value if value in options else default


def controls(scope: Scope) -> tuple[str, str, FilterSpec, Periods | None, str | None]:
    """Series, dimension, filters and periods from the widgets and the link (a link names
    exact periods; otherwise the last 24 hours, 7 or 30 days against the period before).
    Returns a problem to show instead when the link asks for what cannot be split."""
    options = [s for s in splittable() if metric_visible(scope, s.split(".")[0])]
    dims = [d for d in DIMENSIONS if can_see(scope, DIMENSION_FIELDS[d])]
    asked = st.query_params.get("series", DEFAULT_SERIES)
    problem = None
    if asked not in options:
        problem = _refusal(scope, asked)
    left, middle, right = st.columns([3, 2, 3])
    series = left.selectbox(
        "Metric",
        options,
        index=options.index(_choice("series", options, DEFAULT_SERIES)),
        format_func=_series_label,
        help=f"Sums split as differences, ratios and averages into mix and rate. {NOT_SPLIT}",
        key="wc_series",
    )
    dimension = middle.selectbox(
        "Split by",
        dims,
        index=dims.index(_choice("dimension", dims, "model")),
        key="wc_dimension",
    )
    linked = all(st.query_params.get(k) for k in LINK_TIMES)
    with right:
        if linked:
            st.caption("Periods from the link")
            if st.button("Compare the last 7 days instead", icon=":material/restart_alt:"):
                for k in LINK_TIMES:
                    del st.query_params[k]
                st.rerun()
            window = None
        else:
            window = (
                st.segmented_control(
                    "Period",
                    list(PERIODS),
                    default=_choice("period", list(PERIODS), "7d"),
                    format_func=PERIODS.get,
                    key="wc_period",
                )
                or "7d"
            )
            st.query_params["period"] = window
    st.query_params["series"], st.query_params["dimension"] = series, dimension
    try:
        filters = {
            k: v for k, v in url_params().items() if k not in (*PARAMS, *LINK_TIMES, "period")
        }
        spec = FilterSpec.from_query_params(filters)
        if linked:
            spec = spec.replace(
                relative=None,
                start=_time("start"),
                end=_time("end"),
            )
            periods = Periods.of(
                spec, spec.end, st.query_params["before_start"], st.query_params["before_end"]
            )
        else:
            spec = spec.replace(relative=window, start=None, end=None)
            periods = None
    except UserError as exc:
        return series, dimension, FilterSpec(), None, f"The link could not be read: {exc}"
    return series, dimension, spec, periods, problem


def _time(name: str) -> datetime:
    return parse_time(name, st.query_params[name])


def _refusal(scope: Scope, asked: str) -> str:
    """Why a linked series is not offered: the core's own message."""
    try:
        p = plan(asked)
    except UserError as exc:
        return str(exc)
    if not metric_visible(scope, p.series.split(".")[0]):
        return f"{asked} is computed from costs, which your role cannot see."
    return ""


def load(
    scope: Scope, series: str, dimension: str, spec: FilterSpec, periods: Periods | None
) -> tuple[Change | None, str | None]:
    try:
        return cached.change(
            scope, series, dimension, spec.to_json(), periods, cached.minute()
        ), None
    except UserError as exc:
        return None, str(exc)


def _names(change: Change, scope: Scope) -> list[str]:
    projects = cached.projects(scope) if change.dimension == "project" else {}
    out = []
    for c in change.contributions:
        if c.other:
            out.append(f"(other: {c.groups} values)")
        elif change.dimension == "project" and c.value is not None:
            out.append(projects.get(c.value, str(c.value)))
        else:
            out.append(format.group_value(change.dimension, c.value))
    return out


def _fmt(change: Change, value: float | None, signed: bool = False) -> str:
    if value is None:
        return format.MISSING
    text = format.by_unit(change.unit, abs(value) if signed else value)
    return (("+" if value >= 0 else "-") + text) if signed else text


def waterfall(change: Change, scope: Scope) -> go.Figure:
    """Before, each value's part (beyond noise marked), after: the bars add up."""
    names = _names(change, scope)
    marks = [" *" if c.verdict.significant else "" for c in change.contributions]
    x = ["Before", *(f"{n}{m}" for n, m in zip(names, marks, strict=True)), "After"]
    y = [change.before or 0.0, *(c.change for c in change.contributions), change.after or 0.0]
    text = [
        _fmt(change, change.before),
        *(_fmt(change, c.change, signed=True) for c in change.contributions),
        _fmt(change, change.after),
    ]
    scale, suffix = (100.0, "%") if change.unit == "ratio" else (1.0, "")
    figure = go.Figure(
        go.Waterfall(
            x=x,
            y=[v * scale for v in y],
            measure=["absolute", *["relative"] * len(change.contributions), "total"],
            text=text,
            textposition="outside",
            hovertext=text,
            increasing={"marker": {"color": "#E15759"}},
            decreasing={"marker": {"color": "#59A14F"}},
            totals={"marker": {"color": "#4E79A7"}},
            connector={"line": {"color": "#bbb"}},
        )
    )
    figure.update_layout(
        height=420,
        margin=dict(l=10, r=10, t=30, b=10),
        yaxis_title=f"{change.label}{' (%)' if suffix else ''}",
        yaxis_tickprefix="$" if change.unit == "usd" else None,
        showlegend=False,
    )
    return figure


def table(change: Change, scope: Scope) -> pl.DataFrame:
    """One row per value: its figure before and after, its part (mix and rate where they apply)
    and whether its own change is beyond noise."""
    rows = []
    for name, c in zip(_names(change, scope), change.contributions, strict=True):
        row = {
            change.dimension: name,
            "Before": _fmt(change, c.before),
            "After": _fmt(change, c.after),
            "Part of the change": _fmt(change, c.change, signed=True),
        }
        if change.method == SHIFT_SHARE:
            row["Share before"] = format.rate(c.weight_before)
            row["Share after"] = format.rate(c.weight_after)
            row["Mix (traffic moved)"] = _fmt(change, c.mix, signed=True)
            row["Rate (its own figure)"] = _fmt(change, c.rate, signed=True)
        row["Beyond noise"] = "-" if c.other else "yes" if c.verdict.significant else "no"
        rows.append(row)
    return pl.DataFrame(rows)


def caption(change: Change) -> str:
    p = change.periods
    method = (
        "Each part is its mix effect (its share of the rows moved) plus its rate effect (its "
        "own figure moved), by the midpoint shift-share; the parts add up to the change."
        if change.method == SHIFT_SHARE
        else "Each part is the value's total after minus before; the parts add up to the change."
    )
    return (
        f"{range_text(p.after_start, p.after_end)} against "
        f"{range_text(p.before_start, p.before_end)}. {method} "
        f"* beyond noise: {HELP} {change.source}"
    )


def headline_contributors(changes: dict[str, Change], scope: Scope) -> None:
    """Under the Overview's tiles: for each headline change, the values that drove it most,
    and a link to the full analysis on the What changed page."""
    columns = st.columns(3)
    for i, change in enumerate(changes.values()):
        with columns[i % 3], st.container(border=True):
            st.markdown(
                f"**{change.label}** {_fmt(change, change.change, signed=True)}"
                if change.change is not None
                else f"**{change.label}**: nothing to compare"
            )
            for name, c in zip(_names(change, scope), change.contributions, strict=True):
                mark = " · beyond noise" if c.verdict.significant else ""
                st.caption(f"{name}: {_fmt(change, c.change, signed=True)}{mark}")
            st.page_link(
                PAGE,
                label="Full analysis",
                icon=":material/waterfall_chart:",
                query_params=link_params(change.series, change.dimension, change.periods),
            )


def format_whole(change: Change) -> tuple[str, str]:
    return _fmt(change, change.before), _fmt(change, change.after)


def format_change(change: Change) -> str | None:
    if change.change is None:
        return None
    return _fmt(change, change.change, signed=True)
