"""Retention on the Admin page: an admin saves the org's and a project's retention, a bad
value gets a message and changes nothing, and the worker's runs are listed."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from observatory_core.accounts.audit import record
from observatory_core.accounts.retention import Retention, get_retention, set_retention
from observatory_core.accounts.users import scope_for
from tests.ui.test_admin_page import open_admin


@pytest.fixture
def admin_scope_(app_env):
    engine, _ = app_env
    scope = scope_for(engine, "admin-user")
    yield engine, scope
    set_retention(engine, scope, None, None, {})


def _number(at, label: str):
    return next(n for n in at.number_input if n.label == label)


def test_admin_saves_retention(admin_scope_):
    engine, scope = admin_scope_
    at = open_admin("admin")
    assert not at.exception, at.exception
    project_inputs = [n for n in at.number_input if n.label.endswith(": keep spans (days)")]
    assert project_inputs
    _number(at, "Keep spans (days)").set_value(30)
    _number(at, "Keep rollups (days)").set_value(400)
    project_inputs[0].set_value(90)
    next(b for b in at.button if b.label == "Save retention").click()
    at.run()
    assert not at.exception, at.exception
    saved = get_retention(engine, scope)
    assert (saved.span_days, saved.rollup_days) == (30, 400)
    assert list(saved.projects.values()) == [90]


def test_rollups_shorter_than_spans_get_a_message(admin_scope_):
    engine, scope = admin_scope_
    at = open_admin("admin")
    _number(at, "Keep spans (days)").set_value(30)
    _number(at, "Keep rollups (days)").set_value(10)
    next(b for b in at.button if b.label == "Save retention").click()
    at.run()
    assert any("at least as long as spans" in e.value for e in at.error)
    assert get_retention(engine, scope) == Retention()


def test_runs_are_listed(admin_scope_):
    engine, scope = admin_scope_
    with engine.begin() as conn:
        record(
            conn,
            org_id=scope.org_id,
            actor="retention",
            action="retention.run",
            at=datetime(2026, 12, 1, tzinfo=UTC),
            spans=1234,
            traces=200,
            rollup_rows=0,
            bytes_reclaimed=5_000_000,
            seconds=1.5,
            partitions_dropped=["spans_p2026_08"],
        )
    at = open_admin("admin")
    runs = next(d.value for d in at.dataframe if "months dropped" in d.value.columns)
    # the app's database is shared with other page tests, which may list runs of their own
    (row,) = [r for r in runs.to_dict("records") if r["spans"] == 1234]
    assert (row["spans"], row["MB returned to disk"], row["months dropped"]) == (
        1234,
        5.0,
        "spans_p2026_08",
    )


def test_a_failing_span_store_is_a_warning_and_the_setting_is_saved(admin_scope_, monkeypatch):
    from observatory_core.base.errors import DatabaseUnavailable
    from observatory_core.storage.clickhouse import current

    engine, scope = admin_scope_
    at = open_admin("admin")

    def held():
        raise DatabaseUnavailable("The chDB folder is held by another process.")

    monkeypatch.setattr(current, "span_store", held)
    _number(at, "Keep spans (days)").set_value(45)
    next(b for b in at.button if b.label == "Save retention").click()
    at.run()
    assert not at.exception, at.exception
    (warning,) = [w.value for w in at.warning if "span store" in w.value]
    assert "held by another process" in warning and "next retention run" in warning
    assert get_retention(engine, scope).span_days == 45
