"""The live view's feed: new spans matching a `FilterSpec`, alert events, export job status
changes and system alerts, each only for roles with the matching permission; span fields and
filters the role may not see are left out or refused as everywhere (`visibility`).

"New" is by start time: the spans that started since `since`, newest first, listed by the
explorer's builder, so on the span store each span is its one stored row
(docs/span-store-internals.md, "Each span once") and no span id is needed. Spans are read from
`spans` (the span store's engine when it is set), the alerts and export jobs from `engine`
(DATABASE_URL's)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.engine import Engine

from observatory_core.accounts.permissions import Permission
from observatory_core.accounts.scope import Scope
from observatory_core.accounts.visibility import visible
from observatory_core.alerts.history import active_alerts, events
from observatory_core.exports.jobs import list_exports
from observatory_core.filters.spec import FilterSpec
from observatory_core.traces.query import list_spans

SPAN_FIELDS = (
    "start_time",
    "name",
    "provider",
    "model",
    "environment",
    "user_id",
    "status",
    "duration_ms",
    "total_tokens",
    "total_cost_usd",
    "trace_id",
)


@dataclass
class Feed:
    spans: list[dict] = field(default_factory=list)
    span_fields: tuple[str, ...] = ()
    alert_events: list[dict] = field(default_factory=list)
    export_changes: list[dict] = field(default_factory=list)
    system_alerts: list[dict] = field(default_factory=list)
    shown: frozenset[str] = frozenset()  # which parts the role may see


def _export_changes(jobs: list[dict], since: datetime) -> list[dict]:
    changes = []
    for job in jobs:
        for what, at in (
            ("created", job["created_at"]),
            ("started", job["started_at"]),
            (job["status"], job["finished_at"]),
        ):
            if at is not None and at >= since:
                changes.append(
                    {
                        "at": at,
                        "job": job["id"],
                        "change": what,
                        "by": job["created_by"],
                        "rows": job["rows_written"],
                    }
                )
    return sorted(changes, key=lambda c: c["at"], reverse=True)


def live_feed(
    engine: Engine,
    scope: Scope,
    spec: FilterSpec,
    *,
    since: datetime,
    now: datetime,
    limit: int = 50,
    spans: Engine | None = None,
) -> Feed:
    """What happened since `since`, newest first; parts the role may not see stay empty.
    Spans come from `spans` (where spans are read), else `engine`."""
    feed = Feed()
    shown = set()
    if scope.can(Permission.TRACES_READ):
        window = spec.replace(relative=None, start=since, end=now)
        fields = visible(scope, SPAN_FIELDS)  # a viewer's feed has no cost column
        page = list_spans(spans or engine, scope, window, limit=limit, fields=fields, now=now)
        feed.spans, feed.span_fields = page.rows, page.fields
        shown.add("spans")
    if scope.can(Permission.ALERTS_READ):
        feed.alert_events = events(engine, scope, since=since, limit=limit)
        feed.system_alerts = [a for a in active_alerts(engine, scope) if a["system_kind"]]
        shown.add("alerts")
    if scope.can(Permission.EXPORTS_READ):
        feed.export_changes = _export_changes(list_exports(engine, scope, limit=limit), since)[
            :limit
        ]
        shown.add("exports")
    feed.shown = frozenset(shown)
    return feed
