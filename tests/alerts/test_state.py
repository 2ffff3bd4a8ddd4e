"""The state machine with an injected clock: pending, firing, keep-firing, resolution, guard."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from observatory_core.alerts.rules import build_rule
from observatory_core.alerts.state import step

T0 = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def run(rule, observations):
    """Feed (second, value, requests) in order; the transitions with their times."""
    state, seen = None, []
    for second, value, requests in observations:
        state, transition = step(state, value, requests, rule, at(second))
        if transition:
            seen.append((second, *transition))
    return state, seen


def rule(**kw):
    base = dict(name="p95", series="duration_ms.p95", comparator=">", threshold=1000, window_s=300)
    return build_rule(**{**base, **kw})


def test_without_pending_a_breach_fires_at_once_and_resolves_when_it_ends():
    state, seen = run(
        rule(), [(0, 500, 10), (10, 1500, 10), (20, 1600, 10), (30, 900, 10), (40, 800, 10)]
    )
    assert seen == [(10, "ok", "firing"), (30, "firing", "resolved")]
    assert state.state == "resolved" and state.last_value == 800


def test_pending_period_must_pass_while_breaching():
    r = rule(pending_s=60)
    _, seen = run(r, [(0, 1500, 10), (30, 1500, 10), (59, 1500, 10), (60, 1500, 10)])
    assert seen == [(0, "ok", "pending"), (60, "pending", "firing")]
    _, seen = run(r, [(0, 1500, 10), (30, 900, 10), (45, 1500, 10), (100, 1500, 10)])
    assert seen == [(0, "ok", "pending"), (30, "pending", "ok"), (45, "ok", "pending")]


def test_keep_firing_holds_the_alert_through_a_short_dip():
    r = rule(keep_firing_s=120)
    _, seen = run(
        r,
        [
            (0, 1500, 10),
            (30, 900, 10),
            (100, 1500, 10),
            (150, 900, 10),
            (219, 900, 10),
            (220, 900, 10),
        ],
    )
    assert seen == [(0, "ok", "firing"), (220, "firing", "resolved")]


def test_below_the_minimum_request_count_nothing_is_judged():
    r = rule(min_requests=20)
    state, seen = run(r, [(0, 5000, 3), (10, 5000, 19), (20, 5000, 20)])
    assert seen == [(20, "ok", "firing")]
    # nor does a quiet firing alert resolve for lack of traffic
    state, transition = step(state, 100, 2, r, at(30))
    assert transition is None and state.state == "firing"


def test_no_value_does_not_breach_and_resolved_can_fire_again():
    r = rule(comparator="<", threshold=0.9, series="success_rate.avg", window_s=600)
    _, seen = run(r, [(0, 0.5, 10), (10, None, 0), (20, 0.95, 10), (30, 0.8, 10)])
    assert seen == [(0, "ok", "firing"), (10, "firing", "resolved"), (30, "resolved", "firing")]
    guarded = rule(comparator="<", threshold=0.9, series="success_rate.avg", min_requests=1)
    _, seen = run(guarded, [(0, 0.5, 10), (10, None, 0), (20, 0.8, 10)])
    assert seen == [(0, "ok", "firing")]  # no traffic, no judgement: still firing
