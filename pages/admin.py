"""Admin: API keys for OTLP exporters and scripts."""

import streamlit as st

from observatory_core.ui import admin_view
from observatory_core.ui.session import current_scope

scope = current_scope()
st.title("Admin")
st.subheader("API keys")
st.caption(
    "Exporters send spans to /v1/traces with 'Authorization: Bearer <key>'. A key is shown once "
    "when it is created; only its hash is stored. Revoking takes effect on the next request."
)
admin_view.new_key_form(scope)
admin_view.key_list(scope)
