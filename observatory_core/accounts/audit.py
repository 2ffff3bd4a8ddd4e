"""The audit trail: who did what to what in an org, when, from where, and what it was before.

Append-only: this module is the only writer of `audit_log`, and nothing here (or anywhere)
updates or deletes an entry except `purge`, which drops entries past the retention setting.
Admins read the trail on the Admin page and download it as CSV.
"""

from __future__ import annotations

import csv
import io
import json
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import delete, select
from sqlalchemy.engine import Connection, Engine

from observatory_core.accounts.permissions import Permission
from observatory_core.accounts.scope import Scope
from observatory_core.base.errors import UserError
from observatory_core.base.zones import UTC_ZONE, Zone
from observatory_core.storage.schema import audit_log

# The actions recorded, with what the Admin page calls them.
ACTIONS = {
    "login": "Logged in",
    "login.failed": "Failed log-in",
    "logout": "Logged out",
    "user.create": "User created",
    "user.role": "Role changed",
    "user.disable": "User disabled",
    "user.enable": "User enabled",
    "user.password": "Password reset",
    "user.unlock": "Log-in unlocked",
    "key.create": "API key created",
    "key.revoke": "API key revoked",
    "price.set": "Price override set",
    "budget.set": "Budget set",
    "org.dedup": "Duplicate-call matching turned on or off",
    "retention.set": "Retention changed",
    "retention.run": "Expired spans and rollups deleted",
    "alert_rule.create": "Alert rule created",
    "alert_rule.update": "Alert rule changed",
    "alert_rule.delete": "Alert rule deleted",
    "alert_rule.mute": "Alert rule muted or unmuted",
    "export.create": "Export created",
    "export.cancel": "Export cancelled",
    "export.download": "Export downloaded",
    "dashboard.create": "Dashboard created",
    "dashboard.update": "Dashboard changed",
    "dashboard.delete": "Dashboard deleted",
}
MAX_ROWS = 10_000

# The client address of the request being served, set once per request by the page router and
# the HTTP API, so core functions need not pass it along.
client_address: ContextVar[str | None] = ContextVar("audit_client_address", default=None)


def _jsonable(value: Any) -> Any:
    """Values as JSON keeps them: times as ISO text, sets as sorted lists."""
    return json.loads(json.dumps(value, default=_default)) if value is not None else None


def _default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, set | frozenset | tuple):
        return sorted(value, key=str)
    return str(value)


def record(
    conn: Connection,
    *,
    org_id: int | None,
    actor: str,
    action: str,
    target: str | None = None,
    before: Any = None,
    after: Any = None,
    address: str | None = None,
    at: datetime | None = None,
    **detail: Any,
) -> None:
    """Append one entry inside the caller's transaction, so the entry and the change it
    describes are committed together or not at all. `org_id` None: no org is involved (a
    failed log-in with an unknown username); such entries are read with the CLI only."""
    conn.execute(
        audit_log.insert().values(
            org_id=org_id,
            username=(actor or "unknown")[:64],
            action=action[:32],
            subject=None if target is None else str(target)[:100],
            at=at or datetime.now(UTC),
            detail=_jsonable(detail) or {},
            before=_jsonable(before),
            after=_jsonable(after),
            address=(address or client_address.get() or None),
        )
    )


def record_for(conn: Connection, scope: Scope, action: str, target: Any = None, **kw: Any) -> None:
    """An entry for what `scope` (a user, a key or the CLI) did in its org."""
    record(conn, org_id=scope.org_id, actor=scope.username, action=action, target=target, **kw)


def changed(before: dict, after: dict) -> tuple[dict, dict]:
    """Only the fields that differ, so an entry shows what changed and nothing else."""
    keys = [k for k in after if before.get(k) != after.get(k)]
    return {k: before.get(k) for k in keys}, {k: after.get(k) for k in keys}


def without_secrets(values: dict) -> dict:
    """Values fit for the trail: a webhook URL keeps its scheme and host only (the path of a
    Slack-style webhook is its secret)."""
    out = dict(values)
    url = out.get("webhook_url")
    if url:
        parts = urlsplit(url)
        out["webhook_url"] = f"{parts.scheme}://{parts.hostname or ''}/…"
    return out


@dataclass(frozen=True)
class AuditFilter:
    action: str | None = None
    actor: str | None = None
    start: date | None = None  # first day included (of `zone`'s calendar)
    end: date | None = None  # last day included
    zone: Zone = UTC_ZONE  # the reader's: their days start at their midnight

    def check(self) -> None:
        if self.action and self.action not in ACTIONS:
            raise UserError(f"Unknown audit action {self.action!r}; choose one of the list.")
        if self.start and self.end and self.start > self.end:
            raise UserError("The date range ends before it starts; swap the dates.")


def read_entries(
    engine: Engine, scope: Scope, filters: AuditFilter | None = None, limit: int = MAX_ROWS
) -> list[dict]:
    """The org's entries, newest first; admins only."""
    scope.require(Permission.ADMIN)
    filters = filters or AuditFilter()
    filters.check()
    a = audit_log.c
    query = select(
        a.id, a.at, a.username, a.action, a.subject, a.before, a.after, a.address, a.detail
    ).where(a.org_id == scope.org_id)
    if filters.action:
        query = query.where(a.action == filters.action)
    if filters.actor:
        query = query.where(a.username == filters.actor.strip())
    if filters.start:
        query = query.where(a.at >= filters.zone.midnight(filters.start))
    if filters.end:
        query = query.where(a.at < filters.zone.midnight(filters.end + timedelta(days=1)))
    query = query.order_by(a.at.desc(), a.id.desc()).limit(limit)
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(query)]


def actors(engine: Engine, scope: Scope) -> list[str]:
    """Everyone with an entry in the org, for the Admin page's filter."""
    scope.require(Permission.ADMIN)
    a = audit_log.c
    with engine.connect() as conn:
        return list(
            conn.execute(
                select(a.username).where(a.org_id == scope.org_id).distinct().order_by(a.username)
            ).scalars()
        )


CSV_COLUMNS = ("at", "username", "action", "subject", "before", "after", "address", "detail")


def to_csv(entries: list[dict], zone: Zone | None = None) -> bytes:
    """The entries as CSV (UTC ISO times, JSON for before/after/detail); given the reader's
    zone, their local time with its offset (`time_local`) next to the UTC one, as exports do."""
    out = io.StringIO()
    writer = csv.writer(out)
    local = ["time_local"] if zone else []
    writer.writerow(
        ["time_utc", *local, "actor", "action", "target", "before", "after", "address", "detail"]
    )
    for e in entries:
        at = e["at"].astimezone(UTC)
        writer.writerow(
            [
                at.isoformat(),
                *([zone.iso(at)] if zone else []),
                e["username"],
                e["action"],
                e["subject"] or "",
                "" if e["before"] is None else json.dumps(e["before"], sort_keys=True),
                "" if e["after"] is None else json.dumps(e["after"], sort_keys=True),
                e["address"] or "",
                json.dumps(e["detail"] or {}, sort_keys=True),
            ]
        )
    return out.getvalue().encode()


def purge(conn: Connection, keep: timedelta, now: datetime | None = None) -> int:
    """Drop entries older than the retention (`OBSERVATORY_AUDIT_RETENTION_DAYS`, run by the
    worker's maintenance); the one delete of audit entries there is."""
    cutoff = (now or datetime.now(UTC)) - keep
    return conn.execute(delete(audit_log).where(audit_log.c.at < cutoff)).rowcount
