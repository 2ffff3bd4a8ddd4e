"""Pieces of the Cost attribution page: the parts as bars, and the table with share and change."""

from __future__ import annotations

import plotly.graph_objects as go
import polars as pl
import streamlit as st

from observatory_core.reports.attribution import Attribution
from observatory_core.ui import colors, format

LABELS = {"cost": "Cost (USD)", "requests": "Requests", "tokens": "Tokens", "errors": "Errors"}
UNITS = {"cost": "usd", "requests": "count", "tokens": "tokens", "errors": "count"}


def totals(view: Attribution) -> None:
    """One tile per figure: the whole period (the rows below add up to it) and its change."""
    for column, figure in zip(st.columns(len(view.figures)), view.figures, strict=True):
        now, before = view.totals[figure], view.previous_totals[figure]
        change = (now - before) / before * 100 if before else None
        column.metric(
            LABELS[figure],
            format.by_unit(UNITS[figure], now),
            format.change(change),
            delta_color="off" if figure in ("requests", "tokens") else "inverse",
            help=f"Previous period: {format.by_unit(UNITS[figure], before)}",
            border=True,
        )


def chart(view: Attribution, figure: str, top: int = 15) -> go.Figure:
    """The largest parts of `figure`, as horizontal bars (the rest in the table)."""
    frame = view.frame.sort(figure, descending=True).head(top)
    shown = frame["value"].to_list()
    palette = colors.assign(shown)
    figure_ = go.Figure(
        go.Bar(
            x=frame[figure].to_list()[::-1],
            y=shown[::-1],
            orientation="h",
            marker_color=[palette[v] for v in shown[::-1]],
            customdata=frame[f"{figure}_share"].to_list()[::-1],
            hovertemplate="%{y}: %{x:,.4g} (%{customdata:.1%} of the total)<extra></extra>",
        )
    )
    figure_.update_layout(
        height=60 + 26 * len(shown),
        margin=dict(l=10, r=10, t=10, b=10),
        xaxis_title=LABELS[figure],
        xaxis_tickprefix="$" if figure == "cost" else None,
        xaxis_separatethousands=True,
    )
    return figure_


def table(view: Attribution) -> tuple[pl.DataFrame, dict]:
    """The rows with share and change, and their column settings: the previous period's
    figures stay in the CSV download, off the screen, so the table fits beside the sidebar."""
    config: dict = {"value": st.column_config.TextColumn(view.key, width=110)}
    for figure in view.figures:
        money = figure == "cost"
        config[figure] = st.column_config.NumberColumn(
            LABELS[figure], format="dollar" if money else "%,d", width=72
        )
        config[f"{figure}_share"] = st.column_config.ProgressColumn(
            "Share", min_value=0.0, max_value=1.0, format="percent", width=64
        )
        config[f"{figure}_previous"] = None
        config[f"{figure}_change_pct"] = st.column_config.NumberColumn(
            "Change %", format="%+.1f%%", width=60
        )
    return view.frame, config
