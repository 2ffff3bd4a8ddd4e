"""The live view: a feed that refreshes by itself, built from `observatory_core.live`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import streamlit as st

from observatory_core.filters.spec import FilterSpec
from observatory_core.live import live_feed
from observatory_core.scope import Scope
from observatory_core.ui.session import engine, guarded

REFRESH_S = 3
LOOKBACK = timedelta(minutes=15)
SPAN_COLUMNS = {
    "start_time": st.column_config.DatetimeColumn("Time", format="HH:mm:ss"),
    "duration_ms": st.column_config.NumberColumn("Duration", format="%.0f ms"),
    "total_cost_usd": st.column_config.NumberColumn("Cost", format="$%.5f"),
    "total_tokens": st.column_config.NumberColumn("Tokens", format="%d"),
}


@st.fragment(run_every=REFRESH_S)
@guarded
def feed(scope: Scope, spec: FilterSpec) -> None:
    now = datetime.now(UTC)
    shown = live_feed(engine(), scope, spec, since=now - LOOKBACK, now=now)
    for alert in shown.system_alerts:
        st.error(
            f"**{alert['name']}**: {alert['last_value']:,.4g} ({alert['comparator']} {alert['threshold']:,.4g})",
            icon=":material/warning:",
        )
    if "spans" in shown.shown:
        st.subheader(
            f"New spans · {len(shown.spans)} in the last {LOOKBACK.seconds // 60} min (latest 50)"
        )
        if shown.spans:
            st.dataframe(
                [{f: row[f] for f in shown.span_fields if f != "trace_id"} for row in shown.spans],
                hide_index=True,
                column_config=SPAN_COLUMNS,
                height=360,
            )
        else:
            st.info(
                "No spans match these filters in the last 15 minutes.",
                icon=":material/hourglass_empty:",
            )
    left, right = st.columns(2)
    if "alerts" in shown.shown:
        with left:
            st.subheader("Alert events")
            for event in shown.alert_events[:15]:
                icon = {"firing": ":red[●]", "pending": ":orange[◐]", "resolved": ":green[○]"}.get(
                    event["to_state"], "○"
                )
                where = f" ({event['group_by']}={event['group_key']})" if event["group_by"] else ""
                st.markdown(
                    f"{icon} `{event['at']:%H:%M:%S}` **{event['name']}**{where} → {event['to_state']}"
                )
            if not shown.alert_events:
                st.caption("No alert changed state in the last 15 minutes.")
    if "exports" in shown.shown:
        with right:
            st.subheader("Export jobs")
            for change in shown.export_changes[:15]:
                st.markdown(
                    f"`{change['at']:%H:%M:%S}` export #{change['job']} {change['change']} · {change['by']}"
                )
            if not shown.export_changes:
                st.caption("No export started or finished in the last 15 minutes.")
    st.caption(f"Updated {now:%H:%M:%S} UTC; refreshes every {REFRESH_S} s.")
