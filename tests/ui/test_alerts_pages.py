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


def backtest_then_save(at: AppTest, engine) -> dict:
    """Backtest the rule in the form (a summary and a chart show), save it; the saved rule."""
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
    return saved


def test_developer_backtests_then_saves_a_rule_from_the_page(clean_rules):
    engine = clean_rules
    at = open_page("developer", "pages/alerts.py")
    assert not at.exception
    next(t for t in at.text_input if t.label == "Name").set_value("slow answers")
    next(t for t in at.text_input if t.label == "Threshold").set_value("1500")
    saved = backtest_then_save(at, engine)
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


def test_developer_makes_an_unusual_for_this_hour_rule_from_the_page(clean_rules):
    engine = clean_rules
    at = open_page("developer", "pages/alerts.py")
    kind = next(r for r in at.radio if r.label == "Fires when the metric is")
    kind.set_value("anomaly").run()
    assert not at.exception
    assert not [t for t in at.text_input if t.label == "Threshold"]  # no number to pick
    next(t for t in at.text_input if t.label == "Name").set_value("unusual p95")
    next(s for s in at.selectbox if s.label == "Direction").set_value("both")
    next(n for n in at.number_input if n.label == "Sensitivity").set_value(3.5)
    next(n for n in at.number_input if n.label == "Weeks").set_value(3)
    saved = backtest_then_save(at, engine)
    assert (
        saved["kind"],
        saved["direction"],
        saved["sensitivity"],
        saved["baseline_weeks"],
        saved["comparator"],
    ) == ("anomaly", "both", 3.5, 3, "<>")
    assert saved["window_s"] == 3600  # a new anomaly rule starts at an hour
    at.run()
    assert any("both usual, 3.5 deviations, 3 weeks" in e.label for e in at.expander)


def _draw_anomaly_backtest():
    """A script for AppTest: an anomaly rule's backtest with one firing and one quiet group."""
    from datetime import UTC, datetime, timedelta

    import polars as pl

    from observatory_core.alerts.backtest import Backtest
    from observatory_core.alerts.rules import build_rule
    from observatory_core.ui.rules_view import _backtest_chart

    start = datetime(2026, 11, 20, 10, tzinfo=UTC)
    hours = [start + timedelta(hours=i) for i in range(4)]
    frame = pl.DataFrame(
        {
            "bucket": hours * 2,
            "group": ["openai"] * 4 + ["anthropic"] * 4,
            "value": [400.0, 1600.0, 1500.0, 420.0, 900.0, 950.0, 910.0, 930.0],
            "requests": [30] * 8,
            "median": [410.0] * 4 + [None] * 4,
            "spread": [82.0] * 4 + [None] * 4,
            "low": [82.0] * 4 + [None] * 4,
            "high": [738.0] * 4 + [None] * 4,
            "firing": [False, True, True, False] + [False] * 4,
        }
    )
    rule = build_rule(
        name="t",
        series="ttft_ms.p50",
        comparator=">",
        threshold=0,
        window_s=3600,
        group_by="provider",
        kind="anomaly",
        sensitivity=4,
    )
    _backtest_chart(rule, Backtest(frame, "1hour", 1, 2 / 8))


def test_an_anomaly_backtest_lists_when_it_would_have_fired_against_the_usual():
    at = AppTest.from_function(_draw_anomaly_backtest).run()
    assert not at.exception
    assert any("Would have fired 1 time(s)" in m.value for m in at.markdown)
    # half the buckets (anthropic's) had no baseline, and the page says so
    assert any(c.value.startswith("50% of the buckets had a baseline") for c in at.caption)
    fired = at.dataframe[0].value
    assert fired["where"].to_list() == ["openai"]
    assert (fired["value"].to_list(), fired["usual"].to_list()) == (["1.6 s"], ["410 ms"])
    assert at.get("plotly_chart")
