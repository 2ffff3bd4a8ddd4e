"""The Admin page's declared dimensions (issue 19): declare a tag or metadata key (or user_id),
watch its
back-fill, remove it. The work is the worker's (`rollups/dimensions.py`)."""

from __future__ import annotations

import streamlit as st

from observatory_core.accounts.scope import Scope
from observatory_core.base.errors import UserError
from observatory_core.rollups.dimensions import BACKFILL_DAYS, declare, list_dimensions, remove
from observatory_core.semantic.fields import DIMENSION_SLOTS
from observatory_core.ui.session import engine
from observatory_core.ui.zone import time_label

STATUS = {"backfilling": "Back-filling", "ready": "Ready", "removing": "Removing"}


@st.fragment(run_every=5)
def dimensions_admin(scope: Scope) -> None:
    """The list with progress (refreshed every 5 seconds while a back-fill runs) and the form."""
    rows = list_dimensions(engine(), scope)
    for r in rows:
        left, mid, right = st.columns([2, 4, 1])
        left.markdown(f"**{r['key']}** · {r['slot']}")
        label = (
            f"{STATUS.get(r['status'], r['status'])}: {r['rows_done']:,} spans, "
            f"from {time_label(r['covered_from'])}"
        )
        mid.progress(r["progress"] if r["status"] != "ready" else 1.0, text=label)
        if r["status"] != "removing" and right.button(
            "Remove", key=f"dim_rm_{r['slot']}", icon=":material/delete:"
        ):
            try:
                remove(engine(), scope, r["key"])
            except UserError as exc:
                st.error(str(exc), icon=":material/error:")
            st.rerun()
    if not rows:
        st.caption("No declared dimensions yet.")
    if len(rows) >= len(DIMENSION_SLOTS):
        st.caption(f"All {len(DIMENSION_SLOTS)} slots are in use; remove one to declare another.")
        return
    with st.form("declare_dimension", clear_on_submit=True):
        key = st.text_input(
            "Key",
            placeholder="tag:customer, metadata:customer or user_id",
            help="Tags like "
            '"customer:acme" are read by tag:customer; a metadata key by metadata:<key>. '
            "user_id and name are fields rollups leave out (too many values for every org): "
            "declare one to chart by it from rollups.",
        )
        if st.form_submit_button("Declare as a dimension", type="primary") and key:
            try:
                declare(engine(), scope, key.strip())
                st.success(
                    f"{key} declared; the worker back-fills the last {BACKFILL_DAYS} days.",
                    icon=":material/check_circle:",
                )
            except UserError as exc:
                st.error(str(exc), icon=":material/error:")
