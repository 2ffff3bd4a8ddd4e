"""Alerts and Live pages in AppTest: rules made on the page work, firing shows with a toast,
bad input gets a message, and each role sees only what it may."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import delete
from streamlit.testing.v1 import AppTest

from observatory_core.accounts.users import scope_for
from observatory_core.alerts.evaluate import evaluate
from observatory_core.alerts.rules import build_rule, create_rule, list_rules
from observatory_core.storage.schema import alert_rules
from tests.ui.test_app import login, start


@pytest.fixture
def clean_rules(app_env):
    engine, _ = app_env
    with engine.begin() as conn:
        conn.execute(delete(alert_rules))
    return engine


def open_page(role: str, page: str) -> AppTest:
    at = login(start(), f"{role}-user")
    at.switch_page(page)
    return at.run()


def fire_any_traffic(engine, scope) -> None:
    """A rule that fires on any request in the last day, evaluated once."""
    rule = build_rule(
        name="any traffic",
        series="request_count.count",
        comparator=">",
        threshold=0,
        window_s=86400,
    )
    create_rule(engine, scope, rule)
    evaluate(engine, datetime.now(UTC))


def button(at: AppTest, label: str):
    return next(b for b in at.button if b.label == label)


def test_developer_backtests_then_saves_a_rule_from_the_page(clean_rules):
    engine = clean_rules
    at = open_page("developer", "pages/alerts.py")
    assert not at.exception
    next(t for t in at.text_input if t.label == "Name").set_value("slow answers")
    next(t for t in at.text_input if t.label == "Threshold").set_value("1500")
    button(at, "Backtest (last 7 days)").click()
    at.run()
    assert not at.exception
    assert any("Would have fired" in m.value for m in at.markdown)
    assert at.get("plotly_chart")
    button(at, "Save rule").click()
    at.run()
    assert any("saved" in s.value for s in at.success)
    scope = scope_for(engine, "developer-user")
    (saved,) = [r for r in list_rules(engine, scope) if not r["system_kind"]]
    assert (saved["name"], saved["series"], saved["threshold"], saved["window_s"]) == (
        "slow answers",
        "duration_ms.p95",
        1500,
        300,
    )


def test_bad_threshold_gets_a_message_and_no_rule(clean_rules):
    at = open_page("admin", "pages/alerts.py")
    next(t for t in at.text_input if t.label == "Name").set_value("oops")
    next(t for t in at.text_input if t.label == "Threshold").set_value("fast")
    button(at, "Save rule").click()
    at.run()
    assert any("Threshold must be a number" in e.value for e in at.error)
    assert [
        r
        for r in list_rules(clean_rules, scope_for(clean_rules, "admin-user"))
        if not r["system_kind"]
    ] == []


def test_a_rule_that_fires_shows_up_with_a_toast(clean_rules):
    engine = clean_rules
    scope = scope_for(engine, "developer-user")
    at = open_page("viewer", "pages/alerts.py")
    assert any("Nothing is firing" in s.value for s in at.success)
    fire_any_traffic(engine, scope)
    at.run()
    assert any("any traffic" in t.value and "is firing" in t.value for t in at.toast)
    firing = at.dataframe[0].value
    assert "any traffic" in firing["rule"].to_list()
    assert not [b for b in at.button if b.label == "Save rule"]  # viewers do not manage


def test_live_page_shows_spans_to_readers_and_not_to_billing(clean_rules):
    at = open_page("developer", "pages/live.py")
    assert not at.exception
    assert any(s.value.startswith("New spans") for s in at.subheader)
    assert {s.value for s in at.subheader} >= {"Alert events", "Export jobs"}
    billing = open_page("billing", "pages/live.py")
    assert not billing.exception
    assert not any(s.value.startswith("New spans") for s in billing.subheader)
    assert "Export jobs" in {s.value for s in billing.subheader}
