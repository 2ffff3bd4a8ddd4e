"""The live view: a feed that refreshes by itself, built from `observatory_core.reports.live`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
import streamlit as st

from observatory_core.accounts.scope import Scope
from observatory_core.filters.spec import FilterSpec
from observatory_core.reports.live import live_feed
from observatory_core.ui import format, tables
from observatory_core.ui.session import engine, guarded, span_engine
from observatory_core.ui.zone import clock, local_frame, time_column, time_label

REFRESH_S = 3
LOOKBACK = timedelta(minutes=15)


@st.fragment(run_every=REFRESH_S)
@guarded
def feed(scope: Scope, spec: FilterSpec) -> None:
    now = datetime.now(UTC)
    shown = live_feed(engine(), scope, spec, since=now - LOOKBACK, now=now, spans=span_engine())
    for alert in shown.system_alerts:
        st.error(
            f"**{alert['name']}**: {format.number(alert['last_value'])} "
            f"({alert['comparator']} {format.number(alert['threshold'])})",
            icon=":material/warning:",
        )
    if "spans" in shown.shown:
        st.subheader(
            f"New spans · {len(shown.spans)} in the last {LOOKBACK.seconds // 60} min (latest 50)"
        )
        if shown.spans:
            frame = pl.DataFrame(
                [{f: row[f] for f in shown.span_fields if f != "trace_id"} for row in shown.spans],
                infer_schema_length=None,
            )
            if "status" in frame.columns:
                frame = frame.with_columns(
                    pl.col("status").cast(pl.String).replace(format.STATUS_WORDS)
                )
            frame, columns = tables.styled(local_frame(frame, "start_time"))
            if "start_time" in columns:
                columns["start_time"] = time_column("Time", fmt="HH:mm:ss")
            st.dataframe(
                frame,
                hide_index=True,
                column_config=columns,
                height=tables.height(frame.height),
                width="stretch",
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
                    f"{icon} `{clock(event['at'])}` **{event['name']}**{where} → {event['to_state']}"
                )
            if not shown.alert_events:
                st.caption("No alert changed state in the last 15 minutes.")
    if "exports" in shown.shown:
        with right:
            st.subheader("Export jobs")
            for change in shown.export_changes[:15]:
                st.markdown(
                    f"`{clock(change['at'])}` export #{change['job']} {change['change']} · {change['by']}"
                )
            if not shown.export_changes:
                st.caption("No export started or finished in the last 15 minutes.")
    st.caption(f"Updated {time_label(now, seconds=True)}; refreshes every {REFRESH_S} s.")
