"""The role matrix on the Live page's feed (its span rows and each filter on a restricted
field), and alert values computed from hidden fields on the Alerts page and Live (see
matrix.py for the matrix itself)."""

from __future__ import annotations

from datetime import timedelta

from observatory_core.accounts.permissions import Role
from observatory_core.filters.spec import FilterSpec
from observatory_core.reports.live import SPAN_FIELDS as LIVE_FIELDS
from observatory_core.reports.live import live_feed
from tests.accounts.matrix import (
    ALL,
    FILTERS_OF,
    PRESENT,
    ROLES,
    cases,
    core,
    expected_ids,
    may_see,
    scope_of,
    typed,
    unless_not_offered,
)
from tests.helpers import END


def path_live(world, role, field):
    """The live feed's span rows (core: the Live page), and each filter on the field there."""
    scope = scope_of(world, role)
    since, now = END - timedelta(hours=4), END

    def shows(feed) -> bool:
        return (
            "spans" in feed.shown
            and field in feed.span_fields
            and all(field in r for r in feed.spans)
        )

    feed = core(lambda: live_feed(world["engine"], scope, ALL, since=since, now=now), shows)
    out = unless_not_offered(feed, field, LIVE_FIELDS)
    for name in FILTERS_OF[field]:
        spec = FilterSpec(relative=None, **{name: typed(name)})
        n = len(expected_ids(name))
        out.append(
            core(
                lambda spec=spec: live_feed(world["engine"], scope, spec, since=since, now=now),
                lambda feed, n=n: "spans" in feed.shown and len(feed.spans) == n,
            )
        )
    return out


WALKS = {"live": path_live}


@cases(*WALKS)
def test_a_role_gets_a_field_on_a_path_only_when_it_may_see_it(world, role, field, path):
    outcomes = WALKS[path](world, role, field)
    assert outcomes, "the path produced nothing to judge"
    if may_see(role, field, path):
        assert set(outcomes) == {PRESENT}, outcomes
    else:
        assert PRESENT not in outcomes, outcomes


def test_alert_values_from_hidden_fields_are_hidden_on_the_alerts_page_and_live(world):
    """A budget rule's numbers are costs; a rule filtered by a text search counts prompts. A
    role that may not see the field sees the rule's state change, never its numbers."""
    from observatory_core.alerts.history import active_alerts, events
    from observatory_core.alerts.rules import RuleSpec, create_rule, list_rules
    from observatory_core.storage.schema import alert_events, alert_states

    engine, dev = world["engine"], scope_of(world, Role.DEVELOPER)
    rules = {
        "budget": create_rule(
            engine, dev, RuleSpec("budget", "total_cost.sum", ">", 0.05, window_s=3600)
        ),
        "text": create_rule(
            engine,
            dev,
            RuleSpec(
                "refactors",
                "request_count.count",
                ">",
                2,
                window_s=3600,
                filters=FilterSpec(relative=None, search="refactor"),
            ),
        ),
        "plain": create_rule(
            engine, dev, RuleSpec("traffic", "request_count.count", ">", 5, window_s=3600)
        ),
    }
    with engine.begin() as conn:
        for name, rule_id in rules.items():
            conn.execute(
                alert_events.insert().values(
                    org_id=world["org"],
                    rule_id=rule_id,
                    group_key="",
                    from_state="pending",
                    to_state="firing",
                    value=0.1 if name == "budget" else 3.0,
                    threshold=0.05 if name == "budget" else 2.0,
                    at=END - timedelta(minutes=5),
                )
            )
            conn.execute(
                alert_states.insert().values(
                    rule_id=rule_id,
                    group_key="",
                    state="firing",
                    since=END - timedelta(minutes=5),
                    last_value=0.1,
                    evaluated_at=END,
                )
            )
    hidden_from = {"budget": {Role.VIEWER}, "text": {Role.BILLING}, "plain": set()}
    for role in ROLES:
        scope = scope_of(world, role)
        feed = live_feed(engine, scope, ALL, since=END - timedelta(hours=1), now=END)
        for read in (
            events(engine, scope, since=END - timedelta(hours=1)),
            active_alerts(engine, scope),
            feed.alert_events,
            list_rules(engine, scope),
        ):
            by_rule = {row.get("rule_id", row.get("id")): row for row in read}
            for name, rule_id in rules.items():
                row = by_rule[rule_id]  # the state is shown to every role that reads alerts
                numbers = [row[k] for k in ("value", "last_value", "threshold") if k in row]
                if role in hidden_from[name]:
                    assert row["values_hidden"] and numbers == [None] * len(numbers), (role, name)
                else:
                    assert not row["values_hidden"] and None not in numbers, (role, name)
