"""Pieces of the Overview page: KPI tiles with their noise mark, rankings, cost and budget charts."""

from __future__ import annotations

from datetime import datetime, timedelta

import plotly.graph_objects as go
import polars as pl
import streamlit as st

from observatory_core.base.zones import CALENDAR_PERIODS, UTC_ZONE, Zone, calendar_period
from observatory_core.filters.spec import FilterSpec
from observatory_core.metrics.catalog import METRICS
from observatory_core.metrics.folding import OTHER
from observatory_core.metrics.partial import covered_text
from observatory_core.reports.overview import BudgetBurn, Kpi, Overview
from observatory_core.reports.significance import HELP
from observatory_core.ui import colors, format
from observatory_core.ui.zone import local, local_series

PALETTE_SPENT = "#4E79A7"
# Calendar periods ("today", "yesterday", "this month") are the reader's (base.zones).
PERIODS = {
    "24h": "Last 24 hours",
    "7d": "Last 7 days",
    "30d": "Last 30 days",
    **CALENDAR_PERIODS,
}


def period_spec(chosen: str, zone: Zone, minute: str) -> FilterSpec:
    """The filter of a period: a relative window, or a calendar period of `zone`'s clock."""
    if chosen in CALENDAR_PERIODS:
        start, end = calendar_period(chosen, zone, datetime.fromisoformat(minute))
        return FilterSpec(relative=None, start=start, end=end)
    return FilterSpec(relative=chosen)


def period() -> str:
    chosen = (
        st.segmented_control(
            "Period",
            list(PERIODS),
            default=st.query_params.get("period", "7d")
            if st.query_params.get("period") in PERIODS
            else "7d",
            format_func=PERIODS.get,
            key="ov_period",
        )
        or "7d"
    )
    if chosen != "7d":
        st.query_params["period"] = chosen
    elif "period" in st.query_params:
        del st.query_params["period"]
    return chosen


def _value(k: Kpi, value: float | None) -> str:
    return format.by_unit(k.unit, value)


def kpi_tiles(view: Overview) -> None:
    per_row = 4
    for start in range(0, len(view.kpis), per_row):
        row = view.kpis[start : start + per_row]
        for column, k in zip(st.columns(per_row), row, strict=False):
            change = format.change(k.change_pct)
            if change and k.verdict.significant:
                change += " · beyond noise"
            elif change:
                change += " · within noise"
            still = k.change_pct == 0  # no arrow and no colour for "no change"
            column.metric(
                k.label,
                _value(k, k.current),
                change,
                delta_color="off" if still else "normal" if k.higher_is_better else "inverse",
                delta_arrow="off" if still else "auto",
                help=f"Previous period: {_value(k, k.previous)}. {HELP}",
                border=True,
            )


NO_VALUE = {
    # rankings count LLM calls (issue 24): a call without a model is one that failed early
    "model": "(no model)",
    "user_id": "(no user id)",
    "project": "(no project)",
}
AXIS = {"usd": "Cost (USD)", "ms": "Duration", "count": "Spans"}
BY_LABEL = {
    "requests": "Requests (LLM calls)",
    "errors": "Errors (LLM calls)",
    "duration": "Total duration",
}


def names(values: list, dimension: str) -> list[str]:
    """Group values as a person reads them: no value says what those spans are."""
    return [NO_VALUE.get(dimension, "(none)") if v is None else str(v) for v in values]


def ranking(frame: pl.DataFrame, dimension: str, by_series: str, label: str) -> None:
    if frame.is_empty():
        st.caption("Nothing in this period.")
        return
    metric = METRICS[by_series.split(".")[0]]
    shown = names(frame[dimension].to_list(), dimension)
    values = frame[by_series].to_list()
    colours = colors.assign(shown)
    figure = go.Figure(
        go.Bar(
            x=values[::-1],
            y=shown[::-1],
            orientation="h",
            marker_color=[colours[n] for n in shown[::-1]],
            hovertext=[
                f"{n}: {format.by_unit(metric.unit, v)}" for n, v in zip(shown, values, strict=True)
            ][::-1],
            hoverinfo="text",
        )
    )
    axis = AXIS["usd"] if metric.unit == "usd" else BY_LABEL.get(label, label)
    if metric.unit == "ms":
        size, unit, _ = format.duration_unit(values)
        figure.update_traces(x=[v / size if v is not None else None for v in values[::-1]])
        axis = f"{axis} ({unit})"
    figure.update_layout(
        height=40 + 28 * len(shown),
        margin=dict(l=10, r=10, t=10, b=10),
        xaxis_title=axis,
        xaxis_tickprefix="$" if metric.unit == "usd" else None,
        xaxis_separatethousands=True,
        yaxis=dict(automargin=True),
    )
    st.plotly_chart(figure, width="stretch")


def cost_per_day(
    frame: pl.DataFrame, partial: dict | None = None, zone: Zone = UTC_ZONE
) -> go.Figure:
    """Stacked daily cost per model: the top models by cost, the rest as one "(other)" bar.
    `partial`: the days the period cuts short (`MetricResult.partial_buckets`), drawn lighter
    with the covered share in the hover, so today's bar does not read as a fall in spending."""
    partial = partial or {}
    frame = frame.with_columns(
        pl.col("model").cast(pl.String).fill_null(NO_VALUE["model"]).alias("model")
    )
    ranked = (
        frame.group_by("model")
        .agg(pl.col("total_cost.sum").sum().alias("total"))
        .sort("total", "model", descending=[True, False])["model"]
        .to_list()
    )
    kept = ranked if len(ranked) <= colors.MAX_SERIES else ranked[: colors.MAX_SERIES - 1]
    frame = (
        frame.with_columns(
            pl.when(pl.col("model").is_in(kept)).then(pl.col("model")).otherwise(pl.lit(OTHER))
        )
        .group_by("bucket", "model")
        .agg(pl.col("total_cost.sum").sum())
    )
    order = [m for m in ranked if m in kept] + ([OTHER] if len(kept) < len(ranked) else [])
    colours = colors.assign(order)
    figure = go.Figure()
    for model in order:
        part = frame.filter(pl.col("model") == model).sort("bucket")
        days = part["bucket"].to_list()
        figure.add_trace(
            go.Bar(
                x=local_series(part["bucket"], zone),  # the reader's calendar days
                y=part["total_cost.sum"].to_list(),
                name=model,
                marker_color=colours[model],
                marker_opacity=[PARTIAL_OPACITY if d in partial else 1.0 for d in days],
                hovertext=[
                    f"{model}: {format.money(v)}{_partial_note(partial, d)}"
                    for v, d in zip(part["total_cost.sum"], days, strict=True)
                ],
                hoverinfo="x+text",
            )
        )
    figure.update_layout(
        barmode="stack",
        height=380,
        margin=dict(l=10, r=10, t=30, b=10),
        yaxis_title="Cost (USD)",
        yaxis_tickprefix="$",
        xaxis=dict(type="date", tickformat="%b %d", dtick=86_400_000),
        legend=dict(orientation="v", x=1.02, y=1, title_text="Model"),
    )
    return figure


PARTIAL_OPACITY = 0.45  # a day (or hour) the period cuts short: lighter than whole ones


def _partial_note(partial: dict, bucket, seconds: int = 86_400) -> str:
    return f" ({covered_text(partial[bucket], seconds)})" if bucket in partial else ""


def budget_figure(burn: BudgetBurn) -> go.Figure:
    """The month's cumulative spend per day; today, not over yet, is drawn lighter."""
    days = burn.daily["day"].to_list()
    today = [d in burn.partial_days for d in days]
    figure = go.Figure(
        go.Scatter(
            x=local_series(burn.daily["day"], burn.zone),  # the days of the reader's calendar
            y=burn.daily["cumulative"].to_list(),
            name="spent",
            mode="lines+markers",
            line=dict(color=PALETTE_SPENT),
            marker=dict(
                opacity=[PARTIAL_OPACITY if t else 1.0 for t in today],
                symbol=["circle-open" if t else "circle" for t in today],
            ),
            hovertext=[
                format.money(v) + _partial_note(burn.partial_days, d)
                for v, d in zip(burn.daily["cumulative"], days, strict=True)
            ],
            hoverinfo="x+text",
        )
    )
    if burn.budget_usd:
        figure.add_hline(
            y=burn.budget_usd, line_dash="dash", line_color="#E45756", annotation_text="budget"
        )
    # The whole month on a day axis, so the first day of a month is one point on a calendar,
    # not a lone point on an axis in fractions of a millisecond.
    first = local(burn.month_start, burn.zone)
    month_end = local(burn.month_end, burn.zone) if burn.month_end else first + timedelta(days=31)
    figure.update_layout(
        height=260,
        margin=dict(l=10, r=10, t=10, b=10),
        yaxis_title="Cost (USD)",
        yaxis_tickprefix="$",
        yaxis_rangemode="tozero",
        xaxis=dict(
            type="date",
            range=[first - timedelta(hours=12), month_end - timedelta(hours=12)],
            tickformat="%b %d",
        ),
    )
    return figure


def budget(burn: BudgetBurn) -> None:
    if burn.budget_usd is None:
        st.caption(
            f"Spent this month: {format.money(burn.spent_usd)}; forecast for the month "
            f"{format.money(burn.forecast_usd)}. No budget is set; an admin can set one below."
        )
    else:
        share = burn.spent_usd / burn.budget_usd
        st.progress(
            min(share, 1.0),
            text=f"{format.money(burn.spent_usd)} of "
            f"{format.money(burn.budget_usd)} ({share:.0%}) spent this month",
        )
        forecast_share = burn.forecast_share or 0
        message = (
            f"Month-end forecast at this month's daily rate: {format.money(burn.forecast_usd)} "
            f"({forecast_share:.0%} of the budget)."
        )
        (st.error if forecast_share > 1 else st.warning if forecast_share > 0.9 else st.success)(
            message
        )
    st.plotly_chart(budget_figure(burn), width="stretch")
