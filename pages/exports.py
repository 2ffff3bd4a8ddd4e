"""Exports: start an export of the filtered spans, watch it, cancel it, download it."""

import streamlit as st

from observatory_core.errors import UserError
from observatory_core.exports.jobs import EXPORT_DEFAULT_FIELDS, MAX_ROWS, create_export
from observatory_core.exports.writers import FORMATS
from observatory_core.permissions import Permission
from observatory_core.traces.fields import ALL_FIELDS, hidden_fields
from observatory_core.ui import exports_view, filters
from observatory_core.ui.session import current_scope, engine

scope = current_scope()
spec = filters.sidebar(scope, frozenset(), page="exports")
st.title("Exports")

if scope.can(Permission.EXPORTS_CREATE):
    hidden = hidden_fields(scope)
    with st.form("new_export"):
        st.markdown("**New export** of the spans the sidebar filters select")
        st.caption(f"Filters: {filters.describe(spec)}")
        choices = [f for f in ALL_FIELDS if f not in hidden and f != "id"]
        fields = st.multiselect(
            "Fields", choices, default=[f for f in EXPORT_DEFAULT_FIELDS if f in choices]
        )
        cols = st.columns(3)
        fmt = cols[0].selectbox("Format", FORMATS, format_func=str.upper)
        gzip = cols[1].toggle("gzip", value=True)
        limit = cols[2].number_input(
            "Row limit", min_value=1, max_value=MAX_ROWS, value=MAX_ROWS, step=1000
        )
        if st.form_submit_button("Start export", type="primary"):
            try:
                job = create_export(
                    engine(),
                    scope,
                    spec,
                    fmt=fmt,
                    compression="gzip" if gzip else "none",
                    fields=fields,
                    row_limit=int(limit),
                )
                st.toast(f"Export #{job['id']} queued.")
            except UserError as exc:
                st.error(str(exc))

st.subheader("Your org's exports")
exports_view.job_list(scope)

if scope.can(Permission.ADMIN):
    with st.expander("Export statistics (admins)"):
        exports_view.statistics(scope)
