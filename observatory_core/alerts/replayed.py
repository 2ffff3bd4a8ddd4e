"""A rule's history written from a replay of the past, as if it had been evaluated all along.

For rules created over data that is already there (the demo's starter rules over the loaded
history): the same state machine as the live evaluator (see `alerts.backtest.replay`), its
transitions stored as alert events and each group's last state as the rule's current state, so
the live evaluator carries on from where the replay stopped. No webhook is sent for the past.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete
from sqlalchemy.engine import Engine

from observatory_core.accounts.scope import Scope
from observatory_core.alerts.backtest import replay
from observatory_core.alerts.rules import RuleSpec
from observatory_core.storage.schema import alert_events, alert_states


def write_replayed_history(
    engine: Engine,
    scope: Scope,
    rule_id: int,
    rule: RuleSpec,
    *,
    days: float,
    now: datetime,
    spans: Engine | None = None,
) -> int:
    """Replace the rule's events and states with its replay over the past `days`; the number
    of events written. The replay reads `spans` (the span store's when it is set), else
    `engine`; the history is written to `engine` (DATABASE_URL)."""
    _, _, transitions, states = replay(spans or engine, scope, rule, days=days, now=now)
    with engine.begin() as conn:
        conn.execute(delete(alert_events).where(alert_events.c.rule_id == rule_id))
        conn.execute(delete(alert_states).where(alert_states.c.rule_id == rule_id))
        if transitions:
            conn.execute(
                alert_events.insert(),
                [
                    {
                        "org_id": scope.org_id,
                        "rule_id": rule_id,
                        "group_key": t.group[:200],
                        "from_state": t.before,
                        "to_state": t.after,
                        "value": t.value,
                        "threshold": t.against,
                        "at": t.at,
                    }
                    for t in sorted(transitions, key=lambda t: t.at)
                ],
            )
        if states:
            conn.execute(
                alert_states.insert(),
                [
                    {
                        "rule_id": rule_id,
                        "group_key": group[:200],
                        "state": s.state,
                        "since": s.since,
                        "last_breach_at": s.last_breach_at,
                        "last_value": s.last_value,
                        "last_requests": s.last_requests,
                        "evaluated_at": now,
                    }
                    for group, s in states.items()
                ],
            )
    return len(transitions)
