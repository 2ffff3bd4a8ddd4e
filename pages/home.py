"""Home: the last 24 hours of the user's org at a glance, each number against the day before."""

import streamlit as st

from observatory_core.reports.summary import percent_change
from observatory_core.ui import cached, format, home_view
from observatory_core.ui.session import current_scope
from observatory_core.ui.zone import current_zone, time_label

scope = current_scope()
summary = cached.home(scope, current_zone())
now, before = summary.current, summary.previous

st.title("Last 24 hours")
st.caption(
    f"{time_label(now.start)} to {time_label(now.end)}. Changes compare with the 24 hours before."
)

if now.requests == 0 and before.requests == 0:
    st.info(
        "No spans in the last 48 hours. Load demo data with "
        "`python -m observatory_core demo`, or send traces to this server.",
        icon=":material/inbox:",
    )
    st.stop()

tiles = [
    (
        "Requests",
        format.count(now.requests),
        percent_change(now.requests, before.requests),
        "normal",
    ),
    ("Traces", format.count(now.traces), percent_change(now.traces, before.traces), "normal"),
    (
        "Error rate",
        format.rate(now.error_rate),
        percent_change(now.error_rate, before.error_rate),
        "inverse",
    ),
    (
        "p95 latency",
        format.duration_ms(now.p95_ms),
        percent_change(now.p95_ms, before.p95_ms),
        "inverse",
    ),
]
if now.cost_usd is not None:
    tiles.insert(
        1,
        (
            "Cost",
            format.money(now.cost_usd),
            percent_change(now.cost_usd, before.cost_usd),
            "inverse",
        ),
    )

for column, (label, value, delta, color) in zip(st.columns(len(tiles)), tiles, strict=True):
    still = delta == 0  # no arrow and no colour for "no change"
    column.metric(
        label,
        value,
        format.change(delta),
        delta_color="off" if still else color,
        delta_arrow="off" if still else "auto",
        border=True,
    )

st.plotly_chart(home_view.requests_chart(summary), width="stretch")
