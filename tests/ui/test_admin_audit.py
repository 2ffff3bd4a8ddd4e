"""The Admin page's audit trail: entries of the org with filters; other roles never see it."""

from __future__ import annotations

import pytest

from observatory_core.accounts.users import scope_for
from observatory_core.reports.overview import set_budget
from tests.ui.test_admin_page import open_admin
from tests.ui.test_app import login, start


def _trail(at):
    """The audit trail's table (the page may show the retention runs' table too)."""
    return next(d.value for d in at.dataframe if "action" in d.value.columns)


def test_admin_reads_and_filters_the_trail(app_env):
    engine, _ = app_env
    set_budget(engine, scope_for(engine, "admin-user"), 1234)
    set_budget(engine, scope_for(engine, "globex-admin"), 999)  # another org: never shown
    at = open_admin("admin")
    assert not at.exception
    trail = _trail(at)
    afters = list(trail[trail["action"] == "budget.set"]["after"])
    assert '{"monthly_usd": 1234.0}' in afters and '{"monthly_usd": 999.0}' not in afters
    next(s for s in at.selectbox if s.label == "Action").set_value("user.create")
    at.run()
    trail = _trail(at)
    assert set(trail["action"]) == {"user.create"}
    assert {"admin-user", "viewer-user"} <= set(trail["target"])
    assert "globex-admin" not in set(trail["target"])


@pytest.mark.parametrize("role", ["developer", "viewer", "billing"])
def test_other_roles_cannot_open_the_trail(app_env, role):
    at = login(start(), f"{role}-user")
    with pytest.raises(ValueError, match="Could not find a navigation page"):
        at.switch_page("pages/admin.py")
