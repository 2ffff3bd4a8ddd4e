"""Admin widgets for retention: how long spans and rollups are kept (per org, per project),
and what the worker's runs deleted (docs/operations.md, "Retention")."""

from __future__ import annotations

import polars as pl
import streamlit as st

from observatory_core.accounts import audit, retention
from observatory_core.accounts.scope import Scope
from observatory_core.base.errors import UserError
from observatory_core.storage.stores import store_for
from observatory_core.ui import cached
from observatory_core.ui.session import engine
from observatory_core.ui.zone import local_frame, time_column

RUNS_SHOWN = 20


def _days_input(label: str, value: int | None, key: str, help_: str | None = None):
    return st.number_input(
        label,
        min_value=retention.MIN_DAYS,
        max_value=retention.MAX_DAYS,
        value=value,
        step=1,
        placeholder="forever",
        key=key,
        help=help_,
    )


def retention_form(scope: Scope) -> None:
    """The org's span and rollup retention and each project's own span retention (empty:
    forever, or for a project the org's). Admins only: `set_retention` checks the role."""
    current = retention.get_retention(engine(), scope)
    projects = cached.projects(scope)
    with st.form("retention"):
        span_days = _days_input(
            "Keep spans (days)",
            current.span_days,
            "retention_span_days",
            "Whole traces go once their last span is older; empty keeps them forever.",
        )
        rollup_days = _days_input(
            "Keep rollups (days)",
            current.rollup_days,
            "retention_rollup_days",
            "At least as long as spans: charts of old months read the rollups.",
        )
        per_project = {}
        if projects:
            st.caption("A project may keep its spans longer or shorter (empty: the org's).")
            for project_id, name in projects.items():
                per_project[project_id] = _days_input(
                    f"{name}: keep spans (days)",
                    current.projects.get(project_id),
                    f"retention_project_{project_id}",
                )
        submitted = st.form_submit_button("Save retention", type="primary")
    if submitted:
        try:
            changed = retention.set_retention(engine(), scope, span_days, rollup_days, per_project)
        except UserError as exc:
            st.error(str(exc), icon=":material/error:")
            return
        if changed.span_store_failed:  # saved; the stored spans follow at the worker's run
            st.warning(changed.span_store, icon=":material/warning:")
        elif changed:
            st.toast(
                "Retention saved; the worker applies it on its next run."
                + (f" {changed.span_store}" if changed.span_store else "")
            )
            st.rerun()
    status = store_for(engine()).space_reclaim_status(engine())
    if status:
        st.info(status, icon=":material/storage:")


def retention_runs(scope: Scope) -> None:
    """The worker's latest runs that deleted something in this org (from the audit trail)."""
    entries = audit.read_entries(
        engine(), scope, audit.AuditFilter(action="retention.run"), limit=RUNS_SHOWN
    )
    if not entries:
        st.caption("No retention run has deleted anything in this org yet.")
        return
    frame = pl.DataFrame(
        [
            {
                "at": e["at"],
                "spans": e["detail"].get("spans", 0),
                "traces": e["detail"].get("traces", 0),
                "rollup rows": e["detail"].get("rollup_rows", 0),
                "MB returned to disk": round(e["detail"].get("bytes_reclaimed", 0) / 1e6, 1),
                "seconds": e["detail"].get("seconds", 0.0),
                "months dropped": ", ".join(e["detail"].get("partitions_dropped", [])),
            }
            for e in entries
        ]
    )
    st.dataframe(
        local_frame(frame, "at"), hide_index=True, column_config={"at": time_column("When")}
    )
    st.caption(
        "MB returned to disk counts the whole database (orgs share its files): months dropped "
        "on PostgreSQL, pages freed by the incremental vacuum on SQLite."
    )
