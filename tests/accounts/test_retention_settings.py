"""Retention settings: only admins change them, bad values get a message, every change is in
the audit trail (accounts/retention.py)."""

from __future__ import annotations

import pytest

from observatory_core.accounts.audit import AuditFilter, read_entries
from observatory_core.accounts.permissions import Role
from observatory_core.accounts.retention import Retention, get_retention, set_retention
from observatory_core.base.errors import PermissionDenied, UserError
from tests.helpers import admin_scope, make_org


@pytest.mark.parametrize("role", [Role.DEVELOPER, Role.VIEWER, Role.BILLING])
def test_non_admins_cannot_change_retention(engine, role):
    org, (project,) = make_org(engine, "acme")
    with pytest.raises(PermissionDenied, match="admin"):
        set_retention(engine, admin_scope(org, role), 30, 400, {project: 7})
    assert get_retention(engine, admin_scope(org, role)) == Retention()


def test_admins_set_org_and_project_retention_audited(engine):
    org, (main, long_) = make_org(engine, "acme", projects=("main", "long"))
    scope = admin_scope(org, username="alice")
    assert set_retention(engine, scope, 30, "400", {main: None, long_: 90})
    assert get_retention(engine, scope) == Retention(30, 400, {long_: 90})
    assert not set_retention(engine, scope, 30, 400, {main: "", long_: 90})  # no change
    (entry,) = read_entries(engine, scope, AuditFilter(action="retention.set"))
    assert entry["username"] == "alice"
    assert entry["before"] == {"span_days": None, "rollup_days": None, "project_span_days": {}}
    assert entry["after"] == {
        "span_days": 30,
        "rollup_days": 400,
        "project_span_days": {str(long_): 90},
    }
    assert set_retention(engine, scope, None, None, {})  # back to forever
    assert get_retention(engine, scope) == Retention()


@pytest.mark.parametrize(
    ("spans", "rollups", "projects", "message"),
    [
        (0, None, {}, "whole number of days from 1"),
        (1.5, None, {}, "whole number of days"),
        ("a month", None, {}, "not a number of days"),
        (30, 10, {}, "at least as long as spans"),
        (30, 60, {"p": 90}, "at least as long as spans"),
        (None, 60, {}, "at least as long as spans"),
    ],
)
def test_bad_values_get_a_message(engine, spans, rollups, projects, message):
    org, (project,) = make_org(engine, "acme")
    projects = dict.fromkeys([project] if projects else [], 90)
    with pytest.raises(UserError, match=message):
        set_retention(engine, admin_scope(org), spans, rollups, projects)
    assert get_retention(engine, admin_scope(org)) == Retention()


def test_another_orgs_project_is_refused(engine):
    org, _ = make_org(engine, "acme")
    _, (theirs,) = make_org(engine, "globex")
    with pytest.raises(UserError, match="not one of this org's"):
        set_retention(engine, admin_scope(org), 30, None, {theirs: 7})
