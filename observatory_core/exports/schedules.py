"""Repeating exports: the same filter, format and fields over each previous full day, week or
month of the owner's clock, each run an ordinary export job (README, "Exports").

A schedule keeps its filter without a time window and its zone; `next_run_at` is the end of
the period it waits for (local midnight, Monday 00:00 or the 1st at 00:00: a New York day is
23 or 25 hours when the clocks change). When it is due, the worker's round (`run_due`) moves
`next_run_at` on to the end of the current period and inserts the job for the previous full
period, in one transaction whose first statement is that compare-and-set update: a second
worker's update matches nothing, and a unique index on (schedule_id, period_start) refuses a
second job for a period whatever happens. A worker that was down runs the latest full
period once, not every period it missed.

Each run is checked with the owner's role as it is then (fields, filters: viewers see no
costs, billing no prompt text), so a demoted owner's schedule stops with a message rather
than exporting what they may no longer see. A file ready is announced by a webhook through
the alerts' delivery loop (`alerts/webhooks.py`), to addresses `alerts/egress.py` allows.
"""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import delete, func, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from observatory_core.accounts.audit import record_for
from observatory_core.accounts.permissions import Permission
from observatory_core.accounts.scope import Scope
from observatory_core.accounts.users import scope_for
from observatory_core.alerts.rules import check_webhook_url
from observatory_core.alerts.webhooks import queue_delivery
from observatory_core.base.errors import PermissionDenied, UserError
from observatory_core.base.plain_text import plain_name
from observatory_core.base.settings import get_settings
from observatory_core.base.zones import Zone
from observatory_core.exports.jobs import MAX_ROWS, NotFound, checked_fields, insert_job
from observatory_core.filters.spec import FilterSpec
from observatory_core.ingest.apikeys import key_scope
from observatory_core.storage.schema import export_jobs, export_schedules, webhook_deliveries
from observatory_core.storage.transient import is_transient

log = logging.getLogger("observatory.exports")
CADENCES = {"daily": "Daily", "weekly": "Weekly (Mondays)", "monthly": "Monthly (on the 1st)"}
MAX_PER_ORG = 50
MAX_NAME = 100
_US = timedelta(microseconds=1)


# ---- periods on the owner's clock ------------------------------------------------------


def _first_day(cadence: str, day: date) -> date:
    if cadence == "daily":
        return day
    if cadence == "weekly":
        return day - timedelta(days=day.weekday())
    if cadence == "monthly":
        return day.replace(day=1)
    raise UserError(f"Unknown cadence {cadence!r}; choose {', '.join(CADENCES)}.")


def _following_day(cadence: str, first: date) -> date:
    if cadence == "daily":
        return first + timedelta(days=1)
    if cadence == "weekly":
        return first + timedelta(days=7)
    return (first + timedelta(days=32)).replace(day=1)


def period_of(cadence: str, zone: Zone, t: datetime) -> tuple[datetime, datetime]:
    """[start, end) in UTC of the local day, ISO week (from Monday) or month holding `t`."""
    first = _first_day(cadence, zone.today(t))
    return zone.midnight(first), zone.midnight(_following_day(cadence, first))


def previous_period(cadence: str, zone: Zone, now: datetime) -> tuple[datetime, datetime]:
    """The last full period before `now`: what a run at `now` exports."""
    start, _ = period_of(cadence, zone, now)
    return period_of(cadence, zone, start - _US)


def next_run(cadence: str, zone: Zone, now: datetime) -> datetime:
    """When the period holding `now` is over, and a run can export it."""
    return period_of(cadence, zone, now)[1]


def period_label(cadence: str, zone: Zone, start: datetime) -> str:
    """A period as a person names it: 2026-11-19, week of 2026-11-16, 2026-11."""
    day = zone.today(start)
    if cadence == "weekly":
        return f"week of {day.isoformat()}"
    return day.strftime("%Y-%m") if cadence == "monthly" else day.isoformat()


# ---- managing schedules ----------------------------------------------------------------


def _scoped(scope: Scope):
    return select(export_schedules).where(export_schedules.c.org_id == scope.org_id)


def create_schedule(
    engine: Engine,
    scope: Scope,
    spec: FilterSpec,
    *,
    cadence: str,
    zone: Zone,
    name: str = "",
    fmt: str = "csv",
    compression: str = "none",
    fields: tuple[str, ...] | list[str] | None = None,
    row_limit: int = MAX_ROWS,
    webhook_url: str | None = None,
    now: datetime | None = None,
) -> dict:
    """Repeat an export of what `spec` selects (its time window is replaced by each period)
    every day, week or month of `zone`; checked now as a job would be, and again at each run."""
    scope.require(Permission.EXPORTS_CREATE)
    now = now or datetime.now(UTC)
    if cadence not in CADENCES:
        raise UserError(f"Unknown cadence {cadence!r}; choose {', '.join(CADENCES)}.")
    name = plain_name(name or "", "A schedule's name")
    name = name or f"{CADENCES[cadence].split()[0]} {fmt.upper()} export"
    if len(name) > MAX_NAME:
        raise UserError(f"A schedule's name is at most {MAX_NAME} characters; shorten it.")
    spec = spec.replace(relative=None, start=None, end=None)
    chosen = checked_fields(scope, spec, fmt, compression, fields, row_limit, now)
    url = check_webhook_url(webhook_url)
    with engine.begin() as conn:
        count = conn.execute(
            select(func.count()).where(export_schedules.c.org_id == scope.org_id)
        ).scalar_one()
        if count >= MAX_PER_ORG:
            raise UserError(
                f"Your org has {count} repeating exports, the most it may have; delete one first."
            )
        schedule_id = conn.execute(
            export_schedules.insert().values(
                org_id=scope.org_id,
                owner=scope.username or "",
                name=name,
                filter_json=spec.to_json(),
                format=fmt,
                compression=compression,
                # None: the owner's role's default columns, chosen again at each run
                fields=list(chosen) if fields else None,
                row_limit=row_limit,
                cadence=cadence,
                time_zone=zone.name,
                next_run_at=next_run(cadence, zone, now),
                webhook_url=url,
                enabled=True,
                created_at=now,
            )
        ).inserted_primary_key[0]
        record_for(conn, scope, "export_schedule.create", str(schedule_id), at=now, cadence=cadence)
    return get_schedule(engine, scope, schedule_id)


def get_schedule(engine: Engine, scope: Scope, schedule_id: int) -> dict:
    scope.require(Permission.EXPORTS_READ)
    with engine.connect() as conn:
        row = (
            conn.execute(_scoped(scope).where(export_schedules.c.id == schedule_id))
            .mappings()
            .first()
        )
    if row is None:
        raise NotFound(f"No repeating export {schedule_id} in your org.")
    return dict(row)


def list_schedules(engine: Engine, scope: Scope) -> list[dict]:
    """The org's repeating exports, newest first (everyone who sees exports sees them)."""
    scope.require(Permission.EXPORTS_READ)
    with engine.connect() as conn:
        rows = conn.execute(_scoped(scope).order_by(export_schedules.c.id.desc())).mappings()
        return [dict(r) for r in rows]


def may_manage(scope: Scope, schedule: dict) -> bool:
    """Its owner (while they may still create exports) and the org's admins."""
    if scope.can(Permission.ADMIN):
        return True
    return scope.username == schedule["owner"] and scope.can(Permission.EXPORTS_CREATE)


def _managed(engine: Engine, scope: Scope, schedule_id: int) -> dict:
    schedule = get_schedule(engine, scope, schedule_id)
    if not may_manage(scope, schedule):
        raise PermissionDenied(
            f"Only {schedule['owner']}, who set up this repeating export, or an admin may "
            "change it."
        )
    return schedule


def set_enabled(
    engine: Engine, scope: Scope, schedule_id: int, enabled: bool, now: datetime | None = None
) -> dict:
    """Pause or resume. A resumed schedule waits for the end of the current period: the
    periods it was paused over are not exported after the fact."""
    schedule = _managed(engine, scope, schedule_id)
    now = now or datetime.now(UTC)
    values: dict = {"enabled": enabled}
    if enabled and not schedule["enabled"]:
        values.update(
            next_run_at=next_run(schedule["cadence"], Zone(schedule["time_zone"]), now),
            last_error=None,
        )
    with engine.begin() as conn:
        conn.execute(
            update(export_schedules)
            .where(export_schedules.c.id == schedule_id, export_schedules.c.org_id == scope.org_id)
            .values(**values)
        )
        action = "export_schedule.resume" if enabled else "export_schedule.pause"
        record_for(conn, scope, action, str(schedule_id), at=now)
    return get_schedule(engine, scope, schedule_id)


def delete_schedule(
    engine: Engine, scope: Scope, schedule_id: int, now: datetime | None = None
) -> None:
    """Stop repeating; the jobs it made stay in the list until they expire."""
    _managed(engine, scope, schedule_id)
    now = now or datetime.now(UTC)
    with engine.begin() as conn:
        conn.execute(
            delete(export_schedules).where(
                export_schedules.c.id == schedule_id, export_schedules.c.org_id == scope.org_id
            )
        )
        record_for(conn, scope, "export_schedule.delete", str(schedule_id), at=now)


# ---- runs (the worker) -------------------------------------------------------------------


def run_due(engine: Engine, now: datetime | None = None, limit: int = 20) -> list[int]:
    """Make the job of every due schedule (at most `limit` per round); the ids of the jobs
    this call made. Any number of workers may call it at once: each period runs once."""
    now = now or datetime.now(UTC)
    s = export_schedules.c
    with engine.connect() as conn:
        due = (
            conn.execute(
                select(export_schedules)
                .where(s.enabled.is_(True), s.next_run_at <= now)
                .order_by(s.next_run_at)
                .limit(limit)
            )
            .mappings()
            .all()
        )
    made = []
    for schedule in due:
        try:
            job_id = _run(engine, dict(schedule), now)
        except Exception as exc:  # one schedule's fault must not stop the others, nor exports
            if is_transient(exc):
                raise
            log.exception("repeating export %s could not run", schedule["id"])
            _pause(engine, dict(schedule), "it failed unexpectedly; tell an admin if it repeats.")
            continue
        if job_id is not None:
            made.append(job_id)
    return made


def owner_scope(engine: Engine, schedule: dict) -> Scope:
    """Who a run acts as: its owner with their role as it is now (a user, or the API key that
    set it up); a `UserError` saying why when they are gone."""
    owner = schedule["owner"]
    if owner.startswith("key:"):
        scope = key_scope(engine, schedule["org_id"], owner)
        if scope is None:
            raise UserError(f"The API key {owner[4:]} that set it up was revoked.")
        return scope
    scope = scope_for(engine, owner)
    if scope.org_id != schedule["org_id"]:
        raise UserError(f"{owner} is no longer in this org.")
    return scope


def _claim(schedule: dict, following: datetime):
    """The compare-and-set that makes one worker the one to run this period."""
    s = export_schedules.c
    return (
        update(export_schedules)
        .where(
            s.id == schedule["id"],
            s.enabled.is_(True),
            s.next_run_at == schedule["next_run_at"],
        )
        .values(next_run_at=following)
    )


def _pause(engine: Engine, schedule: dict, problem: str) -> None:
    """Stop a schedule that cannot run, saying why (once, whichever worker sees it first)."""
    s = export_schedules.c
    with engine.begin() as conn:
        conn.execute(
            update(export_schedules)
            .where(s.id == schedule["id"], s.next_run_at == schedule["next_run_at"])
            .values(
                enabled=False,
                last_error=f"Paused: {problem} An admin or the owner may change it and resume.",
            )
        )


def _run(engine: Engine, schedule: dict, now: datetime) -> int | None:
    try:  # a zone or a filter field this version no longer knows
        zone = Zone(schedule["time_zone"])
        cadence = schedule["cadence"]
        start, end = previous_period(cadence, zone, now)
        spec = FilterSpec.from_json(schedule["filter_json"]).replace(start=start, end=end)
    except UserError as exc:
        _pause(engine, schedule, str(exc))
        return None
    following = next_run(cadence, zone, now)
    try:
        owner = owner_scope(engine, schedule)
        owner.require(Permission.EXPORTS_CREATE)
        fields = checked_fields(
            owner,
            spec,
            schedule["format"],
            schedule["compression"],
            schedule["fields"],
            schedule["row_limit"],
            now,
        )
    except UserError as exc:  # the owner may no longer export this
        _pause(engine, schedule, str(exc))
        return None
    try:
        with engine.begin() as conn:
            if not conn.execute(_claim(schedule, following)).rowcount:
                return None  # another worker runs this period
            job_id = insert_job(
                conn,
                owner,
                spec,
                schedule["format"],
                schedule["compression"],
                fields,
                schedule["row_limit"],
                now,
                zone,
                schedule_id=schedule["id"],
                period_start=start,
            )
            conn.execute(
                update(export_schedules)
                .where(export_schedules.c.id == schedule["id"])
                .values(last_job_id=job_id, last_error=None)
            )
    except IntegrityError:  # this period's job exists already: only move on to the next
        with engine.begin() as conn:
            conn.execute(_claim(schedule, following))
        return None
    log.info("repeating export %s: job %s for %s", schedule["id"], job_id, start.isoformat())
    return job_id


def announce_ready(engine: Engine, job: dict, now: datetime | None = None) -> bool:
    """Queue the "file is ready" webhook of a finished run whose schedule has one; whether
    one was queued. The body carries the job, its period and the API's download address
    (an API key of the org fetches it; the page's links need a login)."""
    if not job.get("schedule_id"):
        return False
    now = now or datetime.now(UTC)
    with engine.begin() as conn:
        schedule = (
            conn.execute(
                select(export_schedules).where(export_schedules.c.id == job["schedule_id"])
            )
            .mappings()
            .first()
        )
        if schedule is None or not schedule["webhook_url"]:
            return False
        job = dict(
            conn.execute(select(export_jobs).where(export_jobs.c.id == job["id"])).mappings().one()
        )
        queue_delivery(
            conn,
            schedule["org_id"],
            schedule["webhook_url"],
            ready_message(schedule, job),
            now,
            schedule_id=schedule["id"],
        )
    return True


def last_delivery(engine: Engine, scope: Scope, schedule_id: int) -> dict | None:
    """The latest "file is ready" webhook of a schedule of the caller's org: its status
    (pending, delivered, failed), attempts, last HTTP status or error, and when."""
    scope.require(Permission.EXPORTS_READ)
    d = webhook_deliveries.c
    with engine.connect() as conn:
        row = (
            conn.execute(
                select(
                    d.status,
                    d.attempts,
                    d.last_status_code,
                    d.last_error,
                    d.created_at,
                    d.finished_at,
                )
                .where(d.schedule_id == schedule_id, d.org_id == scope.org_id)
                .order_by(d.id.desc())
                .limit(1)
            )
            .mappings()
            .first()
        )
    return dict(row) if row else None


def download_url(job_id: int) -> str:
    """The API's download address of a job: absolute when OBSERVATORY_PUBLIC_URL is set."""
    path = f"/api/v1/export/jobs/{job_id}/download"
    base = get_settings().public_url
    return f"{base}{path}" if base else path


def ready_message(schedule: dict, job: dict) -> dict:
    """A Slack-compatible text plus the same facts as data."""
    zone = Zone(schedule["time_zone"])
    spec = FilterSpec.from_json(job["filter_json"])
    label = period_label(schedule["cadence"], zone, spec.start)
    url = download_url(job["id"])
    return {
        "text": (
            f":package: Export ready: {schedule['name']} ({label}), "
            f"{job['rows_written']:,} rows. Download: {url}"
        ),
        "export": {
            "job_id": job["id"],
            "schedule_id": schedule["id"],
            "schedule": schedule["name"],
            "period": label,
            "period_start": spec.start.isoformat(),
            "period_end": spec.end.isoformat(),
            "time_zone": zone.name,
            "format": job["format"],
            "compression": job["compression"],
            "rows": job["rows_written"],
            "file_size": job["file_size"],
            "checksum_sha256": job["checksum_sha256"],
            "expires_at": job["expires_at"].isoformat() if job["expires_at"] else None,
            "download_url": url,
        },
    }
