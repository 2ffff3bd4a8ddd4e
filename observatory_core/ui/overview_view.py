"""Pieces of the Overview page: KPI tiles with their noise mark, rankings, cost and budget charts."""

from __future__ import annotations

import plotly.graph_objects as go
import polars as pl
import streamlit as st

from observatory_core.overview import BudgetBurn, Kpi, Overview
from observatory_core.significance import HELP
from observatory_core.ui import format

PERIODS = {"24h": "Last 24 hours", "7d": "Last 7 days", "30d": "Last 30 days"}


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
    return {
        "usd": format.money,
        "ms": format.duration_ms,
        "ratio": format.rate,
    }.get(k.unit, format.count)(value)


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
            column.metric(
                k.label,
                _value(k, k.current),
                change,
                delta_color="normal" if k.higher_is_better else "inverse",
                help=f"Previous period: {_value(k, k.previous)}. {HELP}",
                border=True,
            )


def ranking(frame: pl.DataFrame, dimension: str, by_series: str, label: str) -> None:
    if frame.is_empty():
        st.caption("Nothing in this period.")
        return
    names = ["—" if v is None else str(v) for v in frame[dimension].to_list()]
    figure = go.Figure(
        go.Bar(
            x=frame[by_series].to_list()[::-1],
            y=names[::-1],
            orientation="h",
            marker_color="#4C78A8",
        )
    )
    figure.update_layout(
        height=40 + 28 * len(names), margin=dict(l=10, r=10, t=10, b=10), xaxis_title=label
    )
    st.plotly_chart(figure, width="stretch")


def cost_per_day(frame: pl.DataFrame) -> go.Figure:
    figure = go.Figure()
    for (model,), part in frame.group_by(["model"], maintain_order=True):
        figure.add_trace(
            go.Bar(
                x=part["bucket"].to_list(), y=part["total_cost.sum"].to_list(), name=model or "—"
            )
        )
    figure.update_layout(
        barmode="stack",
        height=340,
        margin=dict(l=10, r=10, t=30, b=10),
        yaxis_title="USD",
        legend=dict(orientation="h", y=-0.2),
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
    figure = go.Figure(
        go.Scatter(
            x=burn.daily["day"].to_list(),
            y=burn.daily["cumulative"].to_list(),
            name="spent",
            mode="lines+markers",
        )
    )
    if burn.budget_usd:
        figure.add_hline(
            y=burn.budget_usd, line_dash="dash", line_color="#E45756", annotation_text="budget"
        )
    figure.update_layout(height=260, margin=dict(l=10, r=10, t=10, b=10), yaxis_title="USD")
    st.plotly_chart(figure, width="stretch")
