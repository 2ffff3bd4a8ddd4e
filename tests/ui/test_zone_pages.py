"""The reader's zone on the pages: stored for the user, it reaches the Metrics page's query
(day buckets of that zone, the same figures as the core's) and its table's times; every time
shown on Users, Sessions, Traces (the list, a trace, the list grouped by day), Alerts, Exports
and Admin is on a Kathmandu (+05:45) reader's clock, checked against zoneinfo directly."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import delete
from streamlit.testing.v1 import AppTest

from observatory_core.accounts.audit import record
from observatory_core.accounts.preferences import set_user_zone
from observatory_core.accounts.users import scope_for
from observatory_core.alerts.history import events
from observatory_core.alerts.rules import list_rules, mute_rule
from observatory_core.base.zones import Zone
from observatory_core.exports.jobs import create_export
from observatory_core.filters.spec import FilterSpec
from observatory_core.metrics.engine import run_metrics
from observatory_core.metrics.query import MetricQuery
from observatory_core.reports.whatchanged import Periods, link_params
from observatory_core.storage.schema import alert_rules, export_jobs
from observatory_core.traces.days import list_days
from observatory_core.traces.detail import get_trace
from observatory_core.traces.query import list_spans
from observatory_core.traces.sessions import list_sessions
from observatory_core.traces.users import list_users
from tests.ui.conftest import ROOT
from tests.ui.test_alerts_pages import fire_any_traffic
from tests.ui.test_app import login
from tests.ui.test_metrics_pages import open_page


def test_the_users_zone_buckets_the_metrics_page(app_env):
    engine, _ = app_env
    scope = scope_for(engine, "admin-user")
    set_user_zone(engine, scope, "Asia/Kathmandu")
    try:
        at = open_page(
            "pages/metrics.py", params={"relative": "7d", "m": "request_count.count", "b": "1day"}
        )
        assert not at.exception, at.exception
        table = at.dataframe[0].value
        core = run_metrics(
            engine,
            scope,
            MetricQuery(
                series=("request_count.count",),
                filters=FilterSpec(relative="7d"),
                bucket="1day",
                zone="Asia/Kathmandu",
            ),
        ).frame
        assert len(table) == core.height > 0
        assert [int(v) for v in table["Requests"]] == core["request_count.count"].to_list()
        # shown on the Kathmandu clock: every day starts at local midnight
        shown = table["bucket"].tolist()
        assert all(t.hour == 0 and t.minute == 0 for t in shown)
    finally:
        set_user_zone(engine, scope, None)


def test_picking_a_zone_stores_it(app_env):
    engine, _ = app_env
    scope = scope_for(engine, "admin-user")
    at = login(AppTest.from_file(str(ROOT / "app.py"), default_timeout=60), "admin-user")
    try:
        assert at.sidebar.selectbox(key="zone_picker").value == "(my browser's)"
        at.sidebar.selectbox(key="zone_picker").select("America/New_York").run(timeout=60)
        assert not at.exception, at.exception
        from observatory_core.accounts.preferences import user_zone

        assert user_zone(engine, scope).name == "America/New_York"
    finally:
        set_user_zone(engine, scope, None)


KTM = ZoneInfo("Asia/Kathmandu")  # +05:45 all year: the reference conversion, not the app's
OFFSET = timedelta(hours=5, minutes=45)


def _wall(t: datetime) -> datetime:
    """An instant as a Kathmandu wall clock shows it (naive), by zoneinfo alone."""
    return (t if t.tzinfo else t.replace(tzinfo=UTC)).astimezone(KTM).replace(tzinfo=None)


def _said(t: datetime, seconds: bool = True) -> str:
    return _wall(t).strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M") + " +0545"


def _same_times(shown, instants) -> None:
    assert [t.to_pydatetime() for t in shown] == [_wall(t) for t in instants]


@pytest.fixture
def kathmandu(app_env):
    """Every role's user reads in Asia/Kathmandu for the test."""
    engine, _ = app_env
    scopes = [scope_for(engine, f"{role}-user") for role in ("admin", "viewer")]
    for scope in scopes:
        set_user_zone(engine, scope, "Asia/Kathmandu")
    yield engine
    for scope in scopes:
        set_user_zone(engine, scope, None)


def test_users_and_sessions_show_local_times(kathmandu):
    engine = kathmandu
    scope = scope_for(engine, "admin-user")
    at = open_page("pages/users.py", params={"relative": "7d"})
    assert not at.exception, at.exception
    core = list_users(engine, scope, FilterSpec(relative="7d"), limit=50)
    table = at.dataframe[0].value
    _same_times(table["first_seen"], [r["first_seen"] for r in core.rows])
    _same_times(table["last_seen"], [r["last_seen"] for r in core.rows])
    assert not any("UTC" in c.value for c in at.caption)
    assert any(c.value.endswith("+0545 · click a row to open it") for c in at.caption)

    session = list_sessions(engine, scope, FilterSpec(relative="7d"), limit=1).rows[0]
    at = open_page("pages/sessions.py", params={"relative": "7d", "session": session["session_id"]})
    assert not at.exception, at.exception
    captions = [c.value for c in at.caption]
    assert f"{_said(session['first_seen'])} to {_said(session['last_seen'])}" in captions
    table = at.dataframe[0].value
    assert table["first_seen"].iloc[0].to_pydatetime() == _wall(session["first_seen"])


def test_traces_list_and_a_trace_show_local_times(kathmandu):
    engine = kathmandu
    scope = scope_for(engine, "admin-user")
    first = list_spans(engine, scope, FilterSpec(relative="7d"), limit=50)
    root = first.rows[0]
    at = open_page("pages/traces.py", params={"relative": "7d", "trace": root["trace_id"]})
    assert not at.exception, at.exception
    _same_times(at.dataframe[0].value["start_time"], [r["start_time"] for r in first.rows])
    started = next(c.value for c in at.caption if c.value.startswith("Started "))
    trace = get_trace(engine, scope, root["trace_id"])
    assert started == f"Started {_said(trace.start)}, ended {_said(trace.end)}"


@pytest.mark.parametrize("role", ["admin", "viewer"])
def test_traces_grouped_by_local_day_and_a_day_clicked(kathmandu, role):
    """The grouped view is the core's days of Kathmandu (costs only for those who see them);
    selecting a day lists that day: start and end in the URL are its local midnights."""
    engine = kathmandu
    scope = scope_for(engine, f"{role}-user")
    at = open_page("pages/traces.py", role=role, params={"relative": "7d", "by": "day"})
    assert not at.exception, at.exception
    core = list_days(engine, scope, FilterSpec(relative="7d"), zone=Zone("Asia/Kathmandu"))
    table = at.dataframe[0].value
    assert [t.date() for t in table["day"]] == [d["day"] for d in core.days]
    assert list(table["rows"]) == [d["rows"] for d in core.days]
    assert list(table["error_count"]) == [d["error_count"] for d in core.days]
    assert ("total_cost_usd" in table.columns) == (role == "admin")
    assert any("days of Asia/Kathmandu" in c.value for c in at.caption)
    if role != "admin":
        return
    assert list(table["total_cost_usd"]) == pytest.approx([d["total_cost_usd"] for d in core.days])
    day = core.days[1]  # a whole day of the demo's (the first is today, still running)
    at.session_state["days_tbl"] = {"selection": {"rows": [1], "columns": [], "cells": []}}
    at.run()
    assert not at.exception, at.exception
    midnight = datetime.combine(day["day"], datetime.min.time(), KTM)
    assert datetime.fromisoformat(at.query_params["start"]) == midnight
    assert datetime.fromisoformat(at.query_params["end"]) == midnight + timedelta(days=1)
    assert "by" not in at.query_params
    shown = at.dataframe[0].value["start_time"]
    assert len(shown) == 50 and {t.date() for t in shown} == {day["day"]}
    narrowed = FilterSpec(relative=None, start=midnight, end=midnight + timedelta(days=1))
    assert list_spans(engine, scope, narrowed, count=True).total == day["rows"]


def test_alerts_exports_and_admin_show_local_times(kathmandu):
    engine = kathmandu
    scope = scope_for(engine, "admin-user")
    ran = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=1)
    with engine.begin() as conn:
        conn.execute(delete(alert_rules))
        conn.execute(delete(export_jobs))
        record(
            conn,
            org_id=scope.org_id,
            actor="retention",
            action="retention.run",
            at=ran,
            spans=12,
        )
    fire_any_traffic(engine, scope)
    (rule,) = [r for r in list_rules(engine, scope) if not r["system_kind"]]
    until = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=50)
    mute_rule(engine, scope, rule["id"], until)
    job = create_export(engine, scope, FilterSpec(relative="1h"))

    at = open_page("pages/alerts.py")
    assert not at.exception, at.exception
    changes = events(engine, scope, limit=500)
    history = next(d.value for d in at.dataframe if "from" in d.value.columns)
    _same_times(history["at"], [e["at"] for e in changes])
    firing = next(d.value for d in at.dataframe if "since" in d.value.columns)
    assert firing["since"].iloc[0].to_pydatetime() == _wall(changes[0]["at"])
    assert firing["muted"].iloc[0] == f"until {_said(until)}"
    muted = f"muted until {_said(until, seconds=False)}"
    assert any(e.label.startswith("any traffic") and e.label.endswith(muted) for e in at.expander)

    at = open_page("pages/live.py")
    assert not at.exception, at.exception
    said = f"`{_wall(changes[0]['at']):%H:%M:%S} +0545` **any traffic**"
    assert any(said in m.value for m in at.markdown), [m.value for m in at.markdown]

    at = open_page("pages/exports.py")
    assert not at.exception, at.exception
    assert f"created {_said(job['created_at'], seconds=False)}" in [c.value for c in at.caption]

    at = open_page("pages/admin.py")
    assert not at.exception, at.exception
    runs = next(d.value for d in at.dataframe if "months dropped" in d.value.columns)
    assert runs["at"].iloc[0].to_pydatetime() == _wall(ran) == ran.replace(tzinfo=None) + OFFSET
    trail = next(d.value for d in at.dataframe if "action" in d.value.columns)
    assert "retention.run" in set(trail["action"])
    assert _wall(ran) in [t.to_pydatetime() for t in trail["at"]]
    dates = next(d for d in at.date_input if d.label.startswith("Dates"))
    assert dates.label == "Dates (Asia/Kathmandu)"
    with engine.begin() as conn:
        conn.execute(delete(alert_rules))


def test_what_changed_and_cost_attribution_periods_are_local(kathmandu):
    """Both pages say their periods on the reader's clock, named by the zone."""
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    periods = Periods(
        hour - timedelta(hours=48), hour - timedelta(hours=24), *(hour - timedelta(hours=24), hour)
    )
    at = open_page("pages/what_changed.py", params=link_params("total_cost.sum", "model", periods))
    assert not at.exception, at.exception

    def said(start, end) -> str:
        return f"{_wall(start):%Y-%m-%d %H:%M} to {_wall(end):%Y-%m-%d %H:%M} Asia/Kathmandu"

    expected = (
        f"{said(periods.after_start, periods.after_end)} against "
        f"{said(periods.before_start, periods.before_end)}."
    )
    assert any(c.value.startswith(expected) for c in at.caption), [c.value for c in at.caption]
    assert f"{_wall(hour):%H:%M}".endswith(":45")

    today = datetime.now(UTC).astimezone(KTM).date()
    start = datetime.combine(today - timedelta(days=1), datetime.min.time(), KTM)
    end = start + timedelta(days=1)
    at = open_page("pages/attribution.py", params={"period": "yesterday"})
    assert not at.exception, at.exception
    assert any(c.value.startswith(f"{said(start, end)}.") for c in at.caption), [
        c.value for c in at.caption
    ]
