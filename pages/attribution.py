"""Cost attribution: what each customer, feature or team (any tag or metadata key) costs."""

import streamlit as st

from observatory_core.ui import attribution_view as av
from observatory_core.ui import cached
from observatory_core.ui import overview_view as ov
from observatory_core.ui.group_choice import group_by_select
from observatory_core.ui.session import current_scope
from observatory_core.ui.zone import current_zone, range_text

scope = current_scope()
st.title("Cost attribution")
st.caption(
    "Cost, requests (LLM calls), tokens and errors split by one key for the period, against "
    'the period of equal length before. Spans without a value for the key are "(none)", so '
    "the rows always add up to the total."
)
left, right = st.columns([2, 3])
with left:
    key = group_by_select(
        st, "Split by", st.query_params.get("key", "tag:customer"), key="attr_key"
    )
with right:
    chosen = ov.period()
if key != "tag:customer":
    st.query_params["key"] = key
elif "key" in st.query_params:
    del st.query_params["key"]

now = cached.minute()
spec = ov.period_spec(chosen, current_zone(), now)  # Today, Yesterday: the reader's days
view = cached.attribution(scope, spec.to_json(), key, now)
st.caption(f"{range_text(view.start, view.end)}. {view.source}")
av.totals(view)
if view.frame.is_empty():
    st.info("No LLM calls in this period.", icon=":material/search_off:")
    st.stop()

by = st.segmented_control(
    "Chart", view.figures, default=view.figures[0], format_func=av.LABELS.get, key="attr_by"
)
st.plotly_chart(av.chart(view, by or view.figures[0]), width="stretch")
frame, columns = av.table(view)
st.dataframe(frame, hide_index=True, column_config=columns, width="stretch")
st.download_button(
    "Download this table (CSV)",
    frame.write_csv(),
    file_name="attribution.csv",
    mime="text/csv",
    icon=":material/download:",
)
