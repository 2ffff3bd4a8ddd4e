"""What changed: a metric's change between two periods, split by a group-by's values."""

import streamlit as st

from observatory_core.ui import whatchanged_view as wc
from observatory_core.ui.session import current_scope

scope = current_scope()
st.title("What changed")
series, dimension, spec, periods, problem = wc.controls(scope)
if problem:
    st.warning(problem, icon=":material/block:")
change, error = wc.load(scope, series, dimension, spec, periods)
if error:
    st.error(error, icon=":material/error:")
    st.stop()
if not change.contributions:
    st.info(
        "Nothing to compare: no rows in either period. Pick a longer period.",
        icon=":material/search_off:",
    )
    st.stop()

before, after = wc.format_whole(change)
left, right = st.columns(2)
left.metric(f"{change.label}, before", before)
right.metric(f"{change.label}, after", after, wc.format_change(change), delta_color="off")
st.plotly_chart(wc.waterfall(change, scope), width="stretch", key="wc_waterfall")
st.caption(wc.caption(change))
rows = wc.table(change, scope)
st.dataframe(rows, hide_index=True, width="stretch")
st.download_button(
    "Download this table (CSV)",
    rows.write_csv(),
    file_name="what_changed.csv",
    mime="text/csv",
    icon=":material/download:",
)
