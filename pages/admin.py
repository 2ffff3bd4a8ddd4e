"""Admin: API keys for OTLP exporters and scripts; users; the org's audit trail; calls sent
twice; how long spans and rollups are kept."""

import streamlit as st

from observatory_core.base.settings import get_settings
from observatory_core.ui import admin_view, dimensions_view, retention_view
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

st.subheader("Users")
st.caption(
    "A new role, a disabled account or a reset password applies on the user's next request; "
    "disabling or resetting ends their sessions."
)
admin_view.user_admin(scope)

st.subheader("Audit trail")
st.caption(
    "Log-ins, user, key, price, budget, alert-rule and export changes in your org: who, when, "
    f"from where, and the values before and after. Entries cannot be changed; they are kept "
    f"{get_settings().audit_retention_days:g} days (OBSERVATORY_AUDIT_RETENTION_DAYS)."
)
admin_view.audit_trail(scope)

st.subheader("Calls sent twice")
st.caption(
    "An app instrumented twice (a provider SDK's own spans beside an instrumentation library, "
    "or two libraries) sends each LLM call as two spans. The richer one counts; the other is "
    "kept, marked 'duplicate of' in the trace, and left out of every figure. Turning this off "
    "counts both from now on."
)
admin_view.duplicate_calls(scope)

st.subheader("Declared dimensions")
st.caption(
    "Up to 10 tag or metadata keys (e.g. tag:customer, metadata:team) that the rollups carry, "
    "so breakdowns by them are as fast as by model. New spans carry them from ingest; the "
    "worker back-fills recent spans in the background. Any other key still works, from the "
    "spans (slower on long ranges)."
)
dimensions_view.dimensions_admin(scope)
st.subheader("Retention")
st.caption(
    "Spans older than the retention are deleted by the worker a whole trace at a time; rollups "
    "are kept longer, so old months still chart. Each run that deleted something is listed "
    "below and in the audit trail."
)
retention_view.retention_form(scope)
retention_view.retention_runs(scope)
