"""Admin widgets: API keys (created and shown once, listed, revoked), the org's users, the
audit trail, and the duplicate calls set aside."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import polars as pl
import streamlit as st

from observatory_core.accounts import audit, org_settings, users
from observatory_core.accounts.permissions import Role
from observatory_core.accounts.scope import Scope
from observatory_core.base.errors import UserError
from observatory_core.ingest.apikeys import SCOPES, create_key, list_keys, revoke_key
from observatory_core.ingest.dedup import set_aside_by_scopes
from observatory_core.ui import cached
from observatory_core.ui.session import engine
from observatory_core.ui.zone import current_zone, local_frame, time_column

ALL_PROJECTS = "All projects (the exporter names one with observatory.project)"


def _endpoint() -> str:
    url = st.context.url or "http://localhost:8501/"
    return url.split("/", 3)[0] + "//" + url.split("/", 3)[2] + "/v1/traces"


def new_key_form(scope: Scope) -> None:
    projects = cached.projects(scope)
    with st.form("new_key", clear_on_submit=True):
        name = st.text_input("Name", placeholder="checkout-service production")
        project = st.selectbox(
            "Project", [None, *projects], format_func=lambda p: projects.get(p, ALL_PROJECTS)
        )
        scopes = st.multiselect(
            "Scopes", SCOPES, default=["ingest"], help="ingest: send spans; read: the HTTP API"
        )
        role = st.selectbox(
            "Acts as (read scope)",
            [r.value for r in Role],
            index=1,
            help="What a key with the read scope may see and do through the HTTP API.",
        )
        submitted = st.form_submit_button("Create key", type="primary")
    if submitted:
        try:
            key = create_key(
                engine(), scope, name, project_id=project, scopes=tuple(scopes), role=role
            )
        except UserError as exc:
            st.error(str(exc), icon=":material/error:")
            return
        st.session_state["new_api_key"] = key
    key = st.session_state.get("new_api_key")
    if key:
        st.success("Key created. Copy it now: it is shown only this once.", icon=":material/key:")
        st.code(key, language=None)
        st.caption("Point any OpenTelemetry exporter at this server:")
        st.code(
            f"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT={_endpoint()}\n"
            f"OTEL_EXPORTER_OTLP_TRACES_HEADERS=authorization=Bearer%20{key}",
            language="bash",
        )
        if st.button("I have stored it", key="forget_key"):
            del st.session_state["new_api_key"]
            st.rerun()


def key_list(scope: Scope) -> None:
    keys = list_keys(engine(), scope)
    if not keys:
        st.info("No API keys yet: create one above to send spans.", icon=":material/key_off:")
        return
    frame = pl.DataFrame(keys, infer_schema_length=None).with_columns(
        pl.col("project").fill_null("all"),
        pl.when(pl.col("revoked_at").is_null())
        .then(pl.lit("active"))
        .otherwise(pl.lit("revoked"))
        .alias("state"),
    )
    st.dataframe(
        local_frame(frame, "created_at", "last_used_at").select(
            "id",
            "name",
            "prefix",
            "project",
            "scopes",
            "role",
            "state",
            "created_by",
            "created_at",
            "last_used_at",
        ),
        hide_index=True,
        column_config={
            "prefix": st.column_config.TextColumn("Key starts with"),
            "created_at": time_column("Created", fmt="YYYY-MM-DD HH:mm"),
            "last_used_at": time_column("Last used"),
        },
    )
    active = {
        k["id"]: f"#{k['id']} {k['name']} ({k['prefix']}…)" for k in keys if not k["revoked_at"]
    }
    if not active:
        return
    with st.form("revoke_key"):
        chosen = st.selectbox("Revoke a key", list(active), format_func=active.get)
        if st.form_submit_button("Revoke", type="secondary"):
            try:
                revoke_key(engine(), scope, chosen)
            except UserError as exc:
                st.error(str(exc), icon=":material/error:")
            else:
                st.toast(
                    f"Key {active[chosen]} revoked: it stops working now.", icon=":material/block:"
                )
                st.rerun()


def _json(value) -> str:
    return "" if value is None else json.dumps(value, sort_keys=True, ensure_ascii=False)


def audit_trail(scope: Scope) -> None:
    """The org's audit entries with filters, newest first, and the same rows as CSV."""
    zone = current_zone()
    today = zone.today(datetime.now(UTC))
    left, middle, right = st.columns(3)
    action = left.selectbox(
        "Action",
        [None, *audit.ACTIONS],
        format_func=lambda a: "Every action" if a is None else f"{audit.ACTIONS[a]} ({a})",
        key="audit_action",
    )
    actor = middle.selectbox(
        "Who",
        [None, *audit.actors(engine(), scope)],
        format_func=lambda a: "Everyone" if a is None else a,
        key="audit_actor",
    )
    picked = right.date_input(
        f"Dates ({zone.name})", value=(today - timedelta(days=30), today), key="audit_dates"
    )
    if isinstance(picked, tuple | list):  # a range: while it is being picked, one date
        start = picked[0] if picked else None
        end = picked[1] if len(picked) > 1 else None
    else:
        start = end = picked
    try:
        entries = audit.read_entries(
            engine(),
            scope,
            audit.AuditFilter(action=action, actor=actor, start=start, end=end, zone=zone),
        )
    except UserError as exc:
        st.error(str(exc), icon=":material/error:")
        return
    if not entries:
        st.info("No audit entries match these filters.", icon=":material/history:")
        return
    frame = pl.DataFrame(
        [
            {
                "at": e["at"],
                "who": e["username"],
                "action": e["action"],
                "target": e["subject"] or "",
                "before": _json(e["before"]),
                "after": _json(e["after"]),
                "address": e["address"] or "",
                "detail": _json(e["detail"] or None),
            }
            for e in entries
        ],
        infer_schema_length=None,
    )
    st.dataframe(
        local_frame(frame, "at", zone=zone),
        hide_index=True,
        column_config={"at": time_column("When", zone)},
    )
    more = (
        " (the newest ones; narrow the filters for older)" if len(entries) >= audit.MAX_ROWS else ""
    )
    st.caption(f"{len(entries):,} entries{more}.")
    st.download_button(
        "Download CSV",
        audit.to_csv(entries, zone),
        file_name=f"audit-{start or 'start'}-{end or today}.csv",
        mime="text/csv",
        key="audit_csv",
    )


def _done(message: str) -> None:
    st.toast(message, icon=":material/check:")
    st.rerun()


def user_admin(scope: Scope) -> None:
    """The org's users: add one, change a role, disable or enable, reset a password. Every
    change applies on the user's next request and is in the audit trail."""
    people = users.org_users(engine(), scope)
    st.dataframe(
        pl.DataFrame(people, infer_schema_length=None).select(
            "username", "name", "role", "disabled"
        ),
        hide_index=True,
    )
    shown = st.session_state.get("new_user_password")
    if shown:
        st.success(
            f"Password of {shown[0]} (shown once; hand it over safely): `{shown[1]}`",
            icon=":material/key:",
        )
    roles = [r.value for r in Role]
    others = [p["username"] for p in people if p["username"] != scope.username]
    add, change = st.columns(2)
    with add.form("add_user", clear_on_submit=True):
        st.markdown("**Add a user**")
        name = st.text_input("New username", placeholder="dana")
        role = st.selectbox("Role of the new user", roles, index=roles.index("viewer"))
        if st.form_submit_button("Add user"):
            try:
                password = users.admin_add_user(engine(), scope, name, role)
            except UserError as exc:
                st.error(str(exc), icon=":material/error:")
            else:
                st.session_state["new_user_password"] = (name.strip(), password)
                _done(f"{name.strip()} added as {role}.")
    if not others:
        return
    with change.form("change_user"):
        st.markdown("**Change a user**")
        who = st.selectbox("User", others)
        new_role = st.selectbox("New role", roles)
        action = st.radio(
            "Change",
            ["Set the role", "Disable", "Enable", "Reset the password"],
            horizontal=True,
        )
        if st.form_submit_button("Apply"):
            try:
                if action == "Set the role":
                    users.admin_set_role(engine(), scope, who, new_role)
                    _done(f"{who} is now {new_role}.")
                elif action in ("Disable", "Enable"):
                    users.admin_set_disabled(engine(), scope, who, action == "Disable")
                    _done(f"{who} {action.lower()}d.")
                else:
                    password = users.admin_reset_password(engine(), scope, who)
                    st.session_state["new_user_password"] = (who, password)
                    _done(f"New password for {who}; their sessions ended.")
            except UserError as exc:
                st.error(str(exc), icon=":material/error:")


def duplicate_calls(scope: Scope) -> None:
    """The switch for counting a call sent twice once, and what it set aside in the last
    24 hours, per pair of instrumentation scopes (docs/ingestion.md)."""
    enabled = org_settings.dedup_enabled(engine(), scope)
    wanted = st.toggle("Count a call sent twice once", value=enabled, key="dedup_enabled")
    if wanted != enabled:
        try:
            org_settings.set_dedup(engine(), scope, wanted)
        except UserError as exc:
            st.error(str(exc), icon=":material/error:")
        else:
            _done("Duplicate calls are set aside." if wanted else "Every span counts now.")
    pairs = set_aside_by_scopes(engine(), scope)
    if not pairs:
        st.caption("No duplicates were set aside in the last 24 hours.")
        return
    total = sum(p["duplicates"] for p in pairs)
    st.caption(f"{total:,} duplicate spans set aside in the last 24 hours, per pair of scopes:")
    st.dataframe(
        pl.DataFrame(pairs).rename(
            {
                "duplicate_scope": "Set aside (scope)",
                "counted_scope": "Counted instead (scope)",
                "duplicates": "Spans",
            }
        ),
        hide_index=True,
    )
