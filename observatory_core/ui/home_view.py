"""Home's chart: requests per hour over the last 24 hours."""

from __future__ import annotations

import plotly.graph_objects as go

from observatory_core.metrics.partial import covered_text
from observatory_core.reports.summary import HomeSummary
from observatory_core.ui import format
from observatory_core.ui.zone import local

BAR = "#4C78A8"
PARTIAL_OPACITY = 0.45  # the hours the window cuts short (`metrics.partial`): lighter


def requests_chart(summary: HomeSummary) -> go.Figure:
    """One bar per hour; the first and the last hour hold only part of it, so they are drawn
    lighter and their hover says how much, rather than reading as a drop in traffic."""
    hours = [h for h, _ in summary.per_hour]
    counts = [n for _, n in summary.per_hour]
    cut = summary.partial_hours
    figure = go.Figure(
        go.Bar(
            x=[local(h) for h in hours],  # the reader's clock
            y=counts,
            marker_color=BAR,
            marker_opacity=[PARTIAL_OPACITY if h in cut else 1.0 for h in hours],
            hovertext=[
                format.count(n) + (f" ({covered_text(cut[h], 3600)})" if h in cut else "")
                for h, n in zip(hours, counts, strict=True)
            ],
            hoverinfo="x+text",
        )
    )
    figure.update_layout(
        title="Requests per hour",
        height=320,
        margin=dict(l=10, r=10, t=40, b=10),
        xaxis_title=None,
        yaxis_title="spans",
    )
    return figure
