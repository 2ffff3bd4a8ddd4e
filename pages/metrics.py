"""Metrics: any metric over time, grouped, against the previous period; click to zoom in."""

from dataclasses import replace

import streamlit as st

from observatory_core.ui import filters
from observatory_core.ui import metrics_view as mv
from observatory_core.ui.session import current_scope
from observatory_core.ui.zone import zoom_text

scope = current_scope()
spec = filters.sidebar(scope, mv.PAGE_PARAMS, page="metrics")
st.title("Metrics")
query, compare, problem = mv.controls(scope)
if problem:
    st.info(problem, icon=":material/tune:")
    st.stop()
query = replace(query, filters=mv.zoomed(spec))
if zoom := st.query_params.get("zoom"):
    left, right = st.columns([4, 1])
    left.caption(f"Zoomed in on {zoom_text(zoom)} (click or drag on a chart to zoom).")
    if right.button("Reset zoom", icon=":material/zoom_out:"):
        del st.query_params["zoom"]
        st.session_state.pop("mx_point", None)
        st.rerun()

result, previous, problem = mv.load(scope, query, compare)
if problem:
    st.error(problem, icon=":material/error:")
    st.stop()
if mv.is_empty(result):
    st.info(
        "No spans match these filters in this range. Widen the time window in the sidebar.",
        icon=":material/search_off:",
    )
    st.stop()

figure, trace_groups = mv.chart(result, previous)
event = st.plotly_chart(
    figure, width="stretch", on_select="rerun", selection_mode=("points", "box"), key="mx_chart"
)
if picked := mv.selection_zoom(event, result, trace_groups):
    zoom, groups = picked
    st.session_state["mx_point"] = mv.point_filter(query.filters, zoom, groups)
    st.query_params["zoom"] = zoom
    st.rerun()
point = st.session_state.get("mx_point")
if point and st.button(
    "Open the spans behind this point in Traces", icon=":material/account_tree:"
):
    st.switch_page("pages/traces.py", query_params=point.to_query_params())

st.caption(mv.caption(result, previous is not None))
numbers = mv.table(result)
shown, columns = mv.shown_table(result)
st.dataframe(shown, hide_index=True, column_config=columns, width="stretch")
st.download_button(
    "Download this table (CSV)",
    numbers.write_csv(),
    file_name="metrics.csv",
    mime="text/csv",
    icon=":material/download:",
)
