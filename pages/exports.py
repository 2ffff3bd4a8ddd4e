"""Exports: start an export of the filtered spans (once or repeating), watch it, cancel it,
download it."""

import streamlit as st

from observatory_core.accounts.permissions import Permission
from observatory_core.ui import exports_view, filters
from observatory_core.ui.session import current_scope

scope = current_scope()
spec = filters.sidebar(scope, frozenset(), page="exports")
st.title("Exports")

if scope.can(Permission.EXPORTS_CREATE):
    exports_view.new_export_form(scope, spec)
    exports_view.repeat_form(scope, spec)

st.subheader("Repeating exports")
exports_view.schedule_list(scope)

st.subheader("Your org's exports")
exports_view.job_list(scope)

if scope.can(Permission.ADMIN):
    with st.expander("Export statistics (admins)"):
        exports_view.statistics(scope)
