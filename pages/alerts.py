"""Alerts: what fires now (refreshing itself), what resolved, the history, and the rules."""

import streamlit as st

from observatory_core.accounts.permissions import Permission
from observatory_core.ui import alerts_view, filters, rules_view
from observatory_core.ui.session import current_scope

scope = current_scope()
manage = scope.can(Permission.ALERTS_MANAGE)
spec = filters.sidebar(scope, frozenset(), page="alerts") if manage else None
st.title("Alerts")
alerts_view.live_status(scope)

history, rules = st.tabs(["History", "Rules"])
with history:
    alerts_view.history(scope)
with rules:
    if manage:
        with st.expander("New or edited rule", expanded=True):
            rules_view.rule_editor(scope, spec)
    rules_view.rules_list(scope)
