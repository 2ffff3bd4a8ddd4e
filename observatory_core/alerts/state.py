"""The per-group state machine: ok -> pending -> firing -> resolved, as a pure function.

Kept free of storage so the README's state rules (Alerts) are tested exactly, with any clock.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from observatory_core.alerts.anomaly import Baseline
from observatory_core.alerts.rules import RuleSpec

OK, PENDING, FIRING, RESOLVED = "ok", "pending", "firing", "resolved"
NO_GROUP = ""  # the key of a rule's one group when it groups by nothing


def group_key(value) -> str:
    """A group's key as its states and events store it: "(none)" for a missing value."""
    return "(none)" if value is None else str(value)[:200]


@dataclass(frozen=True)
class GroupState:
    state: str
    since: datetime
    last_breach_at: datetime | None = None
    last_value: float | None = None
    last_requests: int | None = None


def step(
    prev: GroupState | None,
    value: float | None,
    requests: int,
    rule: RuleSpec,
    now: datetime,
    baseline: Baseline | None = None,
) -> tuple[GroupState, tuple[str, str] | None]:
    """The next state and the transition (from, to) if there is one.

    Below the minimum request count the rule does not judge: the state stays as it is. With
    no value (no spans in the window) the condition does not hold, so an alert whose traffic
    stopped resolves instead of firing forever. A firing alert resolves only after
    `keep_firing_s` without a breach. An anomaly rule breaches against its `baseline` (none:
    no breach).
    """
    prev = prev or GroupState(OK, now)
    seen = replace(prev, last_value=value, last_requests=requests)
    if requests < rule.min_requests:
        return seen, None
    if value is not None and rule.breaches(value, baseline):
        seen = replace(seen, last_breach_at=now)
        if prev.state in (OK, RESOLVED):
            target = FIRING if rule.pending_s == 0 else PENDING
            return replace(seen, state=target, since=now), (prev.state, target)
        if prev.state == PENDING and now - prev.since >= timedelta(seconds=rule.pending_s):
            return replace(seen, state=FIRING, since=now), (PENDING, FIRING)
        return seen, None
    if prev.state == PENDING:
        return replace(seen, state=OK, since=now), (PENDING, OK)
    if prev.state == FIRING:
        quiet_since = prev.last_breach_at or prev.since
        if now - quiet_since >= timedelta(seconds=rule.keep_firing_s):
            return replace(seen, state=RESOLVED, since=now), (FIRING, RESOLVED)
    return seen, None
