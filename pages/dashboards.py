"""Dashboards: a grid of saved charts under one period and one set of filters, shared by link."""

import streamlit as st

from observatory_core.ui import dashboards_view as dv
from observatory_core.ui import filters
from observatory_core.ui.session import current_scope

scope = current_scope()
st.title("Dashboards")
row = dv.pick(scope)
dv.toolbar(scope, row)
if row is None:
    st.info(
        "Your org has no dashboards yet."
        + (" Start one with New, or Import an export." if dv.can_manage(scope) else ""),
        icon=":material/dashboard:",
    )
    st.stop()
spec = filters.sidebar(scope, dv.PAGE_PARAMS, page="dashboards")
if st.query_params.get("edit") == "1" and dv.can_manage(scope):
    dv.editor(scope, row, spec)
    st.stop()
dv.period_bar(spec)
st.caption(
    f"{filters.describe(spec)} · applies to every chart. This page's link opens the dashboard "
    "with these filters."
)
dv.draw(scope, row["dashboard"], spec)
