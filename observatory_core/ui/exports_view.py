"""The export forms (once, or repeating), the job list (refreshing itself), the repeating
exports, and the admins' export statistics."""

from __future__ import annotations

from datetime import UTC, datetime

import plotly.express as px
import streamlit as st

from observatory_core.accounts.permissions import Permission
from observatory_core.accounts.scope import Scope
from observatory_core.accounts.visibility import export_refusal
from observatory_core.base.errors import UserError
from observatory_core.base.settings import get_settings
from observatory_core.exports.jobs import (
    EXPORT_DEFAULT_FIELDS,
    MAX_ROWS,
    RUNNING_PER_ORG,
    cancel_export,
    create_export,
    list_exports,
)
from observatory_core.exports.links import sign_download
from observatory_core.exports.schedules import (
    CADENCES,
    MAX_NAME,
    create_schedule,
    delete_schedule,
    last_delivery,
    list_schedules,
    may_manage,
    set_enabled,
)
from observatory_core.exports.stats import export_stats
from observatory_core.exports.writers import COMPRESSIONS, FORMATS
from observatory_core.filters.spec import FilterSpec
from observatory_core.traces.fields import ALL_FIELDS, hidden_fields
from observatory_core.ui import filters, format
from observatory_core.ui.session import engine, guarded
from observatory_core.ui.zone import current_zone, time_label

BADGE = {
    "pending": "🕓 pending",
    "processing": "⏳ processing",
    "completed": "✅ completed",
    "failed": "❌ failed",
    "cancelled": "⛔ cancelled",
    "expired": "⌛ expired",
}


def _size(n: int | None) -> str:
    if not n:
        return "—"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024:
            return f"{n:.0f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def _tries(job: dict) -> str:
    """Shown when a job needed more than one run (a takeover or a database retry)."""
    return f" · attempt {job['attempts']}" if (job.get("attempts") or 0) > 1 else ""


def _job(job: dict, scope: Scope, now: datetime) -> None:
    status = job["status"]
    if status == "completed" and job["expires_at"] and job["expires_at"] <= now:
        status = "expired"
    with st.container(border=True):
        head = st.columns([3, 2, 2, 2])
        head[0].markdown(
            f"**#{job['id']}** · {job['format'].upper()}"
            f"{'' if job['compression'] == 'none' else ' · ' + job['compression']}"
            f" · by {job['created_by']}"
        )
        head[1].markdown(BADGE.get(status, status))
        head[2].caption(f"{format.count(job['rows_written'])} rows · {_size(job['file_size'])}")
        head[3].caption(f"created {time_label(job['created_at'])}{_tries(job)}")
        if job.get("period_start"):
            st.caption(
                f":material/event_repeat: A run of a repeating export: the period from "
                f"{time_label(job['period_start'])}"
            )
        if status in ("pending", "processing"):
            st.progress(float(job["progress"] or 0), text=f"{(job['progress'] or 0):.0%}")
            if status == "pending":
                st.caption(
                    f"Waiting for a worker: at most {RUNNING_PER_ORG} exports of an org run at "
                    "once, the others start as soon as one finishes."
                )
            if scope.can(Permission.EXPORTS_CANCEL) and st.button(
                "Cancel", key=f"cancel{job['id']}"
            ):
                try:
                    cancel_export(engine(), scope, job["id"])
                    st.toast(f"Export #{job['id']} cancelled.")
                except UserError as exc:
                    st.error(str(exc))
        elif status == "completed" and (refused := export_refusal(scope, job)):
            st.caption(f":material/visibility_off: {refused}")
        elif status == "completed":
            token = sign_download(get_settings().require_cookie_key(), job["id"], scope.org_id)
            left, right = st.columns([1, 3])
            left.link_button("Download", f"/exports/download/{token}", type="primary")
            right.caption(
                f"Expires {time_label(job['expires_at'])} · SHA-256 {job['checksum_sha256'][:16]}…"
            )
        elif status == "failed":
            st.error(job["error_message"] or "The export failed.")
        elif status == "expired":
            st.caption(
                "This export expired and its file was removed; start it again if you need it."
            )


def _export_inputs(scope: Scope, form: str) -> tuple[list[str], str, str, int]:
    """Fields, format, compression and row limit: the inputs both forms share (`form` keeps
    their keys apart)."""
    hidden = hidden_fields(scope)
    choices = [f for f in ALL_FIELDS if f not in hidden and f != "id"]
    fields = st.multiselect(
        "Fields",
        choices,
        default=[f for f in EXPORT_DEFAULT_FIELDS if f in choices],
        accept_new_options=True,  # "metadata:customer": one key as a column (issue 19)
        help="Type tag:<key> or metadata:<key> to export one key as a column of its own.",
        key=f"{form}_fields",
    )
    cols = st.columns(3)
    fmt = cols[0].selectbox("Format", FORMATS, format_func=str.upper, key=f"{form}_format")
    compression = cols[1].selectbox(
        "Compression",
        COMPRESSIONS,
        help="CSV and JSON files are gzipped whole (.gz) or not; Parquet compresses inside "
        "the file with zstd (smallest), snappy (fastest to read), gzip or none.",
        key=f"{form}_compression",
    )
    limit = cols[2].number_input(
        "Row limit",
        min_value=1,
        max_value=MAX_ROWS,
        value=MAX_ROWS,
        step=1000,
        key=f"{form}_limit",
    )
    return fields, fmt, compression, int(limit)


def new_export_form(scope: Scope, spec: FilterSpec) -> None:
    """The form that queues an export of what the sidebar filters select."""
    with st.form("new_export"):
        st.markdown("**New export** of the spans the sidebar filters select")
        st.caption(f"Filters: {filters.describe(spec)}")
        fields, fmt, compression, limit = _export_inputs(scope, "new_export")
        if st.form_submit_button("Start export", type="primary"):
            try:
                job = create_export(
                    engine(),
                    scope,
                    spec,
                    fmt=fmt,
                    compression=compression,
                    fields=fields,
                    row_limit=limit,
                    zone=current_zone(),  # local time columns next to the UTC ones
                )
                st.toast(f"Export #{job['id']} queued.")
            except UserError as exc:
                st.error(str(exc))


def repeat_form(scope: Scope, spec: FilterSpec) -> None:
    """ "Repeat this export": the sidebar's filters over each previous full day, week or
    month of the reader's clock, each run an ordinary job in the list below."""
    zone = current_zone()
    with st.expander("Repeat this export", icon=":material/event_repeat:"), st.form("repeat"):
        untimed = spec.replace(relative=None, start=None, end=None)
        st.caption(
            f"Filters: {filters.describe(untimed).replace('all time', 'each period')} · "
            f"periods of {zone.name}"
        )
        top = st.columns([2, 1])
        name = top[0].text_input("Name", max_chars=MAX_NAME, placeholder="e.g. Daily chat spans")
        cadence = top[1].selectbox("Repeat", list(CADENCES), format_func=CADENCES.get)
        fields, fmt, compression, limit = _export_inputs(scope, "repeat")
        webhook = st.text_input(
            "Webhook URL (optional)",
            max_chars=500,
            help="Each run POSTs a JSON body (Slack-compatible text, and the job id with the "
            "API's download address) here when its file is ready.",
        )
        if st.form_submit_button("Save repeating export", type="primary"):
            try:
                made = create_schedule(
                    engine(),
                    scope,
                    untimed,
                    cadence=cadence,
                    zone=zone,
                    name=name,
                    fmt=fmt,
                    compression=compression,
                    fields=fields,
                    row_limit=limit,
                    webhook_url=webhook,
                )
                st.toast(
                    f"'{made['name']}' repeats; first run {time_label(made['next_run_at'], zone)}."
                )
            except UserError as exc:
                st.error(str(exc))


def _delivery_text(sent: dict) -> str:
    """ "delivered 2026-12-07 00:01 EST (HTTP 200)", "failed after 5 attempts (HTTP 500)"."""
    answer = f"HTTP {sent['last_status_code']}" if sent["last_status_code"] else sent["last_error"]
    when = time_label(sent["finished_at"] or sent["created_at"])
    tries = f" after {sent['attempts']} attempts" if sent["attempts"] > 1 else ""
    shown = f"{sent['status']} {when}{tries}"
    return f"{shown} ({answer})" if answer else shown


def _schedule(row: dict, scope: Scope) -> None:
    with st.container(border=True):
        head = st.columns([3, 2, 3, 2])
        head[0].markdown(
            f"**{row['name']}** · {CADENCES[row['cadence']].split()[0]} · {row['format'].upper()}"
            f" · by {row['owner']}"
        )
        head[1].markdown("▶️ repeating" if row["enabled"] else "⏸️ paused")
        head[2].caption(
            f"Next run {time_label(row['next_run_at'])}" if row["enabled"] else "Not running"
        )
        head[3].caption(f"Last run #{row['last_job_id']}" if row["last_job_id"] else "No run yet")
        untimed = FilterSpec.from_json(row["filter_json"])
        st.caption(
            f"Filters: {filters.describe(untimed).replace('all time', 'each period')} · "
            f"periods of {row['time_zone']}{' · webhook' if row['webhook_url'] else ''}"
        )
        if row["last_error"]:
            st.warning(row["last_error"], icon=":material/warning:")
        if row["webhook_url"] and (sent := last_delivery(engine(), scope, row["id"])):
            st.caption(f"Last webhook: {_delivery_text(sent)}")
        if not may_manage(scope, row):
            return
        left, right, _ = st.columns([1, 1, 4])
        toggle = "Pause" if row["enabled"] else "Resume"
        try:
            if left.button(toggle, key=f"toggle{row['id']}"):
                set_enabled(engine(), scope, row["id"], not row["enabled"])
                st.rerun()
            if right.button("Delete", key=f"delete{row['id']}"):
                delete_schedule(engine(), scope, row["id"])
                st.toast(f"'{row['name']}' no longer repeats; its files stay until they expire.")
                st.rerun()
        except UserError as exc:
            st.error(str(exc))


def schedule_list(scope: Scope) -> None:
    """The org's repeating exports, each with its next run on the reader's clock; its owner
    and admins may pause, resume or delete it."""
    rows = list_schedules(engine(), scope)
    if not rows:
        st.caption("No repeating exports. Use “Repeat this export” above to set one up.")
    for row in rows:
        _schedule(row, scope)


# Seconds between the job list's refreshes: quick while a job of the list waits or runs, so
# its progress bar moves; slow otherwise, so a Download or Cancel button is not redrawn (and a
# click on it lost) every 2 s while nothing changes, yet a job started elsewhere still shows.
RUNNING_EVERY = 2
IDLE_EVERY = 30
ACTIVE = ("pending", "processing")


def refresh_seconds(jobs: list[dict]) -> int:
    """How soon the list looks again, by what it shows."""
    return RUNNING_EVERY if any(job["status"] in ACTIVE for job in jobs) else IDLE_EVERY


def job_list(scope: Scope) -> None:
    """The org's last 50 exports, refreshing on their own (`refresh_seconds`)."""
    every = refresh_seconds(list_exports(engine(), scope, limit=50))
    st.fragment(run_every=every)(guarded(_job_list))(scope, every)


def _job_list(scope: Scope, every: int) -> None:
    jobs = list_exports(engine(), scope, limit=50)
    if refresh_seconds(jobs) != every:  # a job started or ended: the page sets the new pace
        st.rerun()
    if not jobs:
        st.info("No exports yet. Choose filters in the sidebar and start one above.")
        return
    now = datetime.now(UTC)
    for job in jobs:
        _job(job, scope, now)


def statistics(scope: Scope) -> None:
    stats = export_stats(engine(), scope, zone=current_zone())
    if stats.warning:
        st.warning(stats.warning, icon=":material/warning:")
    tiles = st.columns(3)
    tiles[0].metric("Exports (30 days)", format.count(stats.jobs))
    tiles[1].metric("Success rate", format.rate(stats.success_rate))
    tiles[2].metric("Failure rate, last hour", format.rate(stats.last_hour_failure_rate))
    if stats.jobs == 0:
        return
    left, right = st.columns(2)
    left.plotly_chart(
        px.bar(
            stats.volume,
            x="day",
            y="rows",
            title=f"Rows exported per day ({current_zone().name})",
            height=280,
        ),
        width="stretch",
    )
    right.plotly_chart(
        px.pie(stats.formats, names="format", values="jobs", title="Formats used", height=280),
        width="stretch",
    )
    st.markdown("**Durations by format and size**")
    st.dataframe(stats.durations, hide_index=True)
    st.markdown("**Most active users**")
    st.dataframe(stats.users, hide_index=True)
