"""The demo's starter alert rules come with the history the loaded data would have given them."""

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from observatory_core.accounts.permissions import Role
from observatory_core.accounts.scope import Scope
from observatory_core.accounts.tenancy import org_id_by_slug
from observatory_core.alerts.history import events
from observatory_core.demo.load import load_demo
from observatory_core.demo.starter_rules import STARTER_RULES, install_starter_rules
from observatory_core.storage.migrate import upgrade
from observatory_core.storage.schema import alert_states


def test_the_recent_incident_fires_and_resolves_in_the_starter_rules_history(engine):
    upgrade(engine)
    end = datetime(2026, 11, 20, 18, 0, tzinfo=UTC)
    load_demo(engine, spans=6000, days=1, seed=7, end=end)
    written = install_starter_rules(engine, days=1, now=end)
    with engine.connect() as conn:
        acme = org_id_by_slug(conn, "acme")
    history = events(engine, Scope(acme, Role.ADMIN, username="t"), limit=100)
    assert written >= 2
    latency = [e for e in history if e["name"] == STARTER_RULES[1].name]
    # the OpenAI timeout incident 3.5 hours before the end: fires, then resolves
    openai = [(e["to_state"], e["at"]) for e in reversed(latency) if e["group_key"] == "openai"]
    assert [s for s, _ in openai] == ["firing", "resolved"], openai
    incident = end - timedelta(hours=3.5)
    assert incident <= openai[0][1] <= incident + timedelta(hours=2)
    assert all(e["value"] > 25_000 for e in latency if e["to_state"] == "firing")
    # the live evaluator carries on from the replay's last state
    with engine.connect() as conn:
        states = conn.execute(
            select(alert_states.c.state).where(
                alert_states.c.rule_id == latency[0]["rule_id"],
                alert_states.c.group_key == "openai",
            )
        ).scalars()
        assert list(states) == ["resolved"]
    # a second load keeps the rules and their history as they are
    assert install_starter_rules(engine, days=1, now=end) == 0
