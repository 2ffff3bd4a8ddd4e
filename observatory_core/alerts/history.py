"""What the Alerts page and the live view read: alerts firing now, events, per permission."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select

from observatory_core.accounts.permissions import Permission
from observatory_core.accounts.scope import Scope
from observatory_core.accounts.visibility import rule_values_hidden
from observatory_core.alerts.rules import visible
from observatory_core.storage.schema import alert_events, alert_rules, alert_states

_RULE_COLUMNS = (
    alert_rules.c.name,
    alert_rules.c.system_kind,
    alert_rules.c.series,
    alert_rules.c.comparator,
    alert_rules.c.group_by,
    alert_rules.c.window_s,
    alert_rules.c.muted_until,
    alert_rules.c.filter_json,
    alert_rules.c.kind,
    alert_rules.c.direction,
    alert_rules.c.sensitivity,
    alert_rules.c.baseline_weeks,
)
_NUMBERS = ("value", "last_value", "threshold")


def _shown(scope: Scope, row) -> dict:
    """The row, without numbers derived from fields the role may not see (`visibility`)."""
    out = dict(row)
    out["values_hidden"] = rule_values_hidden(scope, out["series"], out.pop("filter_json"))
    if out["values_hidden"]:
        out.update({k: None for k in _NUMBERS if k in out})
    return out


def active_alerts(engine, scope: Scope) -> list[dict]:
    """Alerts firing or pending now, firing first, with their last value against the threshold."""
    scope.require(Permission.ALERTS_READ)
    s = alert_states.c
    query = (
        select(
            s.rule_id,
            s.group_key,
            s.state,
            s.since,
            s.last_value,
            s.evaluated_at,
            alert_rules.c.threshold,
            *_RULE_COLUMNS,
        )
        .select_from(alert_states.join(alert_rules, alert_rules.c.id == s.rule_id))
        .where(alert_rules.c.org_id == scope.org_id, s.state.in_(("firing", "pending")))
        .order_by(s.state, s.since.desc())
    )
    with engine.connect() as conn:
        return [_shown(scope, r) for r in conn.execute(query).mappings() if visible(scope, r)]


def events(
    engine,
    scope: Scope,
    *,
    since: datetime | None = None,
    after_id: int | None = None,
    to_states: tuple[str, ...] | None = None,
    rule_id: int | None = None,
    limit: int = 200,
) -> list[dict]:
    """Transitions, newest first: the history, the 'resolved recently' list and the toasts."""
    scope.require(Permission.ALERTS_READ)
    e = alert_events.c
    where = [e.org_id == scope.org_id]
    if since is not None:
        where.append(e.at >= since)
    if after_id is not None:
        where.append(e.id > after_id)
    if to_states:
        where.append(e.to_state.in_(to_states))
    if rule_id is not None:
        where.append(e.rule_id == rule_id)
    query = (
        select(
            e.id,
            e.rule_id,
            e.group_key,
            e.from_state,
            e.to_state,
            e.value,
            e.threshold,
            e.at,
            *_RULE_COLUMNS,
        )
        .select_from(alert_events.join(alert_rules, alert_rules.c.id == e.rule_id))
        .where(*where)
        .order_by(e.id.desc())
        .limit(limit)
    )
    with engine.connect() as conn:
        return [_shown(scope, r) for r in conn.execute(query).mappings() if visible(scope, r)]


def last_event_id(engine, scope: Scope) -> int:
    found = events(engine, scope, limit=1)
    return found[0]["id"] if found else 0
