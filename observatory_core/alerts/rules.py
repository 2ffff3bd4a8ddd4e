"""Alert rules: validated once here, stored per org, and the system rules every org has.

A rule is a metrics-engine series (any metric with any aggregation that fits it, so p95
latency and error rate as well as averages), a comparator and threshold over a sliding window,
the same `FilterSpec` as everywhere else, an optional group-by, a minimum request count, a
pending period and a keep-firing period. A rule of kind "anomaly" has no threshold: it fires
when the series leaves what is usual for this hour of the week (`alerts/anomaly.py`), with the
same window, filters, group-by, guard, states, history and webhooks.
"""

from __future__ import annotations

import contextlib
import operator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import urlparse

from sqlalchemy import delete, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from observatory_core.accounts.audit import changed, record_for, without_secrets
from observatory_core.accounts.permissions import Permission
from observatory_core.accounts.scope import Scope
from observatory_core.accounts.visibility import require_filters, require_series, rule_values_hidden
from observatory_core.alerts.anomaly import (
    DEFAULT_SENSITIVITY,
    DEFAULT_WEEKS,
    DIRECTION_SYMBOL,
    DIRECTIONS,
    MAX_RULE_WEEKS,
    MIN_RULE_WEEKS,
    Baseline,
    outside,
)
from observatory_core.base.errors import UserError
from observatory_core.base.plain_text import plain_name
from observatory_core.filters.spec import FilterSpec
from observatory_core.metrics.query import parse_series
from observatory_core.semantic.field_lookups import dimension_problem
from observatory_core.storage.dialect import insert_ignoring_duplicates
from observatory_core.storage.schema import alert_rules, alert_states, orgs

COMPARATORS = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}
MIN_WINDOW_S, MAX_WINDOW_S = 60, 86_400
MAX_PERIOD_S = 86_400
KINDS = ("threshold", "anomaly")


@dataclass(frozen=True)
class SystemRule:
    kind: str
    name: str
    series: str
    comparator: str
    threshold: float
    window_s: int
    min_requests: int
    needs: Permission  # who sees it and its events
    help: str


SYSTEM_RULES = {
    r.kind: r
    for r in (
        SystemRule(
            "export_failure_rate",
            "System: export failure rate",
            "system.export_failure_rate",
            ">",
            0.10,
            3600,
            1,
            Permission.EXPORTS_READ,
            "Share of the org's export jobs that failed among those finished in the last hour.",
        ),
        SystemRule(
            "worker_heartbeat",
            "System: no worker heartbeat",
            "system.worker_silence_s",
            ">",
            60,
            60,
            0,
            Permission.ADMIN,
            "Seconds since any worker process last reported in; exports and alerts stop without one.",
        ),
        SystemRule(
            "ingest_rejections",
            "System: ingestion rejecting spans",
            "system.ingest_rejected",
            ">",
            0,
            300,
            0,
            Permission.ADMIN,
            "Spans the OTLP receiver rejected for this org in the last 5 minutes.",
        ),
    )
}


@dataclass(frozen=True)
class RuleSpec:
    name: str
    series: str
    comparator: str
    threshold: float
    window_s: int
    filters: FilterSpec = field(default_factory=lambda: FilterSpec(relative=None))
    group_by: str | None = None
    min_requests: int = 0
    pending_s: int = 0
    keep_firing_s: int = 0
    webhook_url: str | None = None
    kind: str = "threshold"
    baseline_weeks: int = DEFAULT_WEEKS  # anomaly rules only, like the two below
    sensitivity: float = DEFAULT_SENSITIVITY  # robust deviations from the median
    direction: str = "above"

    @property
    def anomaly(self) -> bool:
        return self.kind == "anomaly"

    def breaches(self, value: float, baseline: Baseline | None = None) -> bool:
        """Threshold rules compare with the threshold; anomaly rules with the baseline."""
        if self.anomaly:
            return outside(value, baseline, self.sensitivity, self.direction)
        return COMPARATORS[self.comparator](value, self.threshold)


def _number(
    name: str, raw, *, whole: bool = False, low: float | None = None, high: float | None = None
):
    try:
        value = int(raw) if whole else float(raw)
    except (TypeError, ValueError):
        example = "300" if whole else "2500 or 0.05"
        raise UserError(f"{name} must be a number, e.g. {example}; got {raw!r}.") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise UserError(f"{name} must be a finite number; got {raw!r}.")
    if (low is not None and value < low) or (high is not None and value > high):
        raise UserError(f"{name} must be between {low:g} and {high:g}; got {raw!r}.")
    return value


def check_webhook_url(url: str | None) -> str | None:
    if not url or not url.strip():
        return None
    url = url.strip()
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc or len(url) > 500:
        raise UserError(
            f"Webhook URL {url[:80]!r} must be an http:// or https:// address (at most 500 "
            "characters), e.g. https://hooks.slack.com/services/..."
        )
    from observatory_core.alerts.egress import check_target
    from observatory_core.alerts.webhooks import allow_list

    # An internal target raises `Refused` (a UserError naming the address). A name that does
    # not resolve now is kept: it is checked again, and any refusal logged, on every send.
    with contextlib.suppress(OSError, UnicodeError):
        check_target(url, allow_list())
    return url


def build_rule(
    *,
    name: str,
    series: str,
    comparator: str,
    threshold,
    window_s,
    filters: FilterSpec | None = None,
    group_by: str | None = None,
    min_requests=0,
    pending_s=0,
    keep_firing_s=0,
    webhook_url: str | None = None,
    kind: str = "threshold",
    baseline_weeks=DEFAULT_WEEKS,
    sensitivity=DEFAULT_SENSITIVITY,
    direction: str = "above",
) -> RuleSpec:
    """A valid rule, or a `UserError` that names the field and the fix. An anomaly rule needs
    no comparator or threshold (they are set from its direction, and 0)."""
    name = plain_name(name or "", "A rule's name")
    if not 1 <= len(name) <= 100 or name.startswith("System:"):
        raise UserError("Name the rule (1 to 100 characters, not starting with 'System:').")
    metric, agg = parse_series(series)  # refuses a metric with an aggregation that does not fit
    if kind not in KINDS:
        raise UserError(f"Rule kind {kind!r} must be one of {', '.join(KINDS)}.")
    anomaly = _anomaly_parts(baseline_weeks, sensitivity, direction) if kind == "anomaly" else {}
    if anomaly:
        comparator, threshold = DIRECTION_SYMBOL[anomaly["direction"]], 0
    elif comparator not in COMPARATORS:
        raise UserError(f"Comparator {comparator!r} must be one of {', '.join(COMPARATORS)}.")
    if group_by and (problem := dimension_problem(group_by)):
        raise UserError(problem)
    spec = filters or FilterSpec(relative=None)
    if spec.relative is not None or spec.start or spec.end:  # the window is the rule's time
        spec = spec.replace(relative=None, start=None, end=None)
    return RuleSpec(
        name=name,
        series=f"{metric}.{agg.value}",
        comparator=comparator,
        threshold=_number("Threshold", threshold),
        window_s=_number(
            "Window (seconds)", window_s, whole=True, low=MIN_WINDOW_S, high=MAX_WINDOW_S
        ),
        filters=spec,
        group_by=group_by or None,
        min_requests=_number("Minimum requests", min_requests, whole=True, low=0, high=10**9),
        pending_s=_number(
            "Pending period (seconds)", pending_s, whole=True, low=0, high=MAX_PERIOD_S
        ),
        keep_firing_s=_number(
            "Keep firing (seconds)", keep_firing_s, whole=True, low=0, high=MAX_PERIOD_S
        ),
        webhook_url=check_webhook_url(webhook_url),
        kind=kind,
        **anomaly,
    )


def _anomaly_parts(weeks, sensitivity, direction) -> dict:
    if direction not in DIRECTIONS:
        raise UserError(f"Direction {direction!r} must be one of {', '.join(DIRECTIONS)}.")
    return {
        "baseline_weeks": _number(
            "Weeks of baseline", weeks, whole=True, low=MIN_RULE_WEEKS, high=MAX_RULE_WEEKS
        ),
        "sensitivity": _number("Sensitivity (deviations)", sensitivity, low=0.5, high=20),
        "direction": direction,
    }


def _values(spec: RuleSpec) -> dict:
    return {
        "name": spec.name,
        "series": spec.series,
        "comparator": spec.comparator,
        "threshold": spec.threshold,
        "window_s": spec.window_s,
        "filter_json": spec.filters.to_json(),
        "group_by": spec.group_by,
        "min_requests": spec.min_requests,
        "pending_s": spec.pending_s,
        "keep_firing_s": spec.keep_firing_s,
        "webhook_url": spec.webhook_url,
        "kind": spec.kind,
        "baseline_weeks": spec.baseline_weeks if spec.anomaly else None,
        "sensitivity": spec.sensitivity if spec.anomaly else None,
        "direction": spec.direction if spec.anomaly else None,
    }


def spec_of(row) -> RuleSpec:
    """The `RuleSpec` of a stored rule (system rules included)."""
    return RuleSpec(
        name=row["name"],
        series=row["series"],
        comparator=row["comparator"],
        threshold=row["threshold"],
        window_s=row["window_s"],
        filters=FilterSpec.from_json(row["filter_json"]),
        group_by=row["group_by"],
        min_requests=row["min_requests"],
        pending_s=row["pending_s"],
        keep_firing_s=row["keep_firing_s"],
        webhook_url=row["webhook_url"],
        **_anomaly_of(row),
    )


def _anomaly_of(row) -> dict:
    """A stored rule's kind and anomaly parameters (rows of threshold rules hold NULLs)."""
    kind = row.get("kind") or "threshold"
    if kind != "anomaly":
        return {"kind": kind}
    return {
        "kind": kind,
        "baseline_weeks": row["baseline_weeks"],
        "sensitivity": row["sensitivity"],
        "direction": row["direction"],
    }


def _metric_cost_check(scope: Scope, spec: RuleSpec) -> None:
    """A rule on a field the role may not see (its series or its filters) is refused."""
    require_series(scope, (spec.series,))
    require_filters(scope, spec.filters)


def create_rule(engine: Engine, scope: Scope, spec: RuleSpec, now: datetime | None = None) -> int:
    scope.require(Permission.ALERTS_MANAGE)
    _metric_cost_check(scope, spec)
    now = now or datetime.now(UTC)
    try:
        with engine.begin() as conn:
            rule_id = conn.execute(
                alert_rules.insert().values(
                    org_id=scope.org_id,
                    created_by=scope.username,
                    created_at=now,
                    updated_at=now,
                    **_values(spec),
                )
            ).inserted_primary_key[0]
            record_for(
                conn, scope, "alert_rule.create", rule_id, after=without_secrets(_values(spec))
            )
            return rule_id
    except IntegrityError:
        raise UserError(
            f"A rule named {spec.name!r} exists already; choose another name."
        ) from None


def _own_rule(conn: Connection, scope: Scope, rule_id: int, *, system_ok: bool = False):
    row = (
        conn.execute(
            select(alert_rules).where(
                alert_rules.c.id == rule_id, alert_rules.c.org_id == scope.org_id
            )
        )
        .mappings()
        .first()
    )
    if row is None:
        raise UserError(f"No alert rule {rule_id} in your org.")
    if row["system_kind"] and not system_ok:
        raise UserError("System rules cannot be edited or deleted; mute them instead.")
    return row


def update_rule(
    engine: Engine, scope: Scope, rule_id: int, spec: RuleSpec, now: datetime | None = None
) -> None:
    """Edit a rule; its state starts over, since old state judged another condition."""
    scope.require(Permission.ALERTS_MANAGE)
    _metric_cost_check(scope, spec)
    try:
        with engine.begin() as conn:
            old = _own_rule(conn, scope, rule_id)
            conn.execute(
                update(alert_rules)
                .where(alert_rules.c.id == rule_id)
                .values(updated_at=now or datetime.now(UTC), **_values(spec))
            )
            before, after = changed(without_secrets(dict(old)), without_secrets(_values(spec)))
            record_for(conn, scope, "alert_rule.update", rule_id, before=before, after=after)
            conn.execute(delete(alert_states).where(alert_states.c.rule_id == rule_id))
    except IntegrityError:
        raise UserError(
            f"A rule named {spec.name!r} exists already; choose another name."
        ) from None


def delete_rule(engine: Engine, scope: Scope, rule_id: int) -> None:
    scope.require(Permission.ALERTS_MANAGE)
    with engine.begin() as conn:
        old = _own_rule(conn, scope, rule_id)
        conn.execute(delete(alert_rules).where(alert_rules.c.id == rule_id))
        before = without_secrets({k: old[k] for k in _values(spec_of(old))})
        record_for(conn, scope, "alert_rule.delete", rule_id, before=before)


def mute_rule(engine: Engine, scope: Scope, rule_id: int, until: datetime | None) -> None:
    """Mute notifications until `until` (None: unmute). The rule is still evaluated."""
    scope.require(Permission.ALERTS_MANAGE)
    with engine.begin() as conn:
        old = _own_rule(conn, scope, rule_id, system_ok=True)
        conn.execute(
            update(alert_rules).where(alert_rules.c.id == rule_id).values(muted_until=until)
        )
        record_for(
            conn,
            scope,
            "alert_rule.mute",
            rule_id,
            before={"muted_until": old["muted_until"]},
            after={"muted_until": until},
        )


def visible(scope: Scope, row) -> bool:
    kind = row["system_kind"]
    return kind is None or scope.can(SYSTEM_RULES[kind].needs)


def list_rules(engine: Engine, scope: Scope) -> list[dict]:
    scope.require(Permission.ALERTS_READ)
    with engine.connect() as conn:
        rows = conn.execute(
            select(alert_rules)
            .where(alert_rules.c.org_id == scope.org_id)
            .order_by(alert_rules.c.id)
        ).mappings()
        return [_numbers_for(scope, dict(r)) for r in rows if visible(scope, r)]


def _numbers_for(scope: Scope, rule: dict) -> dict:
    """A budget threshold is a cost: a role that cannot see the rule's field sees no number."""
    rule["values_hidden"] = rule_values_hidden(scope, rule["series"], rule["filter_json"])
    if rule["values_hidden"]:
        rule["threshold"] = None
    return rule


def ensure_system_rules(conn: Connection, now: datetime) -> None:
    """Every org has the system rules (created on first evaluation, so new orgs get them too)."""
    have = {
        (org_id, kind)
        for org_id, kind in conn.execute(
            select(alert_rules.c.org_id, alert_rules.c.system_kind).where(
                alert_rules.c.system_kind.is_not(None)
            )
        )
    }
    # Read the orgs out first: an open SELECT keeps SQLite's read snapshot, and an INSERT that
    # must upgrade it after another writer's commit fails at once ("database is locked")
    # instead of waiting its turn; that failed the first alerts round after start-up.
    for org_id in conn.execute(select(orgs.c.id)).scalars().all():
        for rule in SYSTEM_RULES.values():
            if (org_id, rule.kind) in have:
                continue
            # Another process may add the same rule at the same moment: its copy wins.
            conn.execute(
                insert_ignoring_duplicates(conn, alert_rules).values(
                    org_id=org_id,
                    name=rule.name,
                    system_kind=rule.kind,
                    series=rule.series,
                    comparator=rule.comparator,
                    threshold=rule.threshold,
                    window_s=rule.window_s,
                    filter_json=FilterSpec(relative=None).to_json(),
                    group_by=None,
                    min_requests=rule.min_requests,
                    pending_s=0,
                    keep_firing_s=0,
                    created_by="system",
                    created_at=now,
                    updated_at=now,
                )
            )
