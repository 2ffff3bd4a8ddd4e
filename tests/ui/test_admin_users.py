"""The Admin page's users: add one (password shown once), change a role, disable."""

from __future__ import annotations

import uuid

from observatory_core.accounts.users import org_users, scope_for
from tests.ui.test_admin_page import open_admin


def test_admin_adds_a_user_then_changes_and_disables_them(app_env):
    engine, _ = app_env
    name = f"ui-{uuid.uuid4().hex[:6]}"
    at = open_admin("admin")
    next(t for t in at.text_input if t.label == "New username").set_value(name)
    next(s for s in at.selectbox if s.label == "Role of the new user").set_value("developer")
    next(b for b in at.button if b.label == "Add user").click()
    at.run()
    assert not at.exception and not at.error
    assert any(name in s.value and "shown once" in s.value for s in at.success)
    scope = scope_for(engine, "admin-user")
    assert {"username": name, "role": "developer"}.items() <= next(
        u for u in org_users(engine, scope) if u["username"] == name
    ).items()
    next(s for s in at.selectbox if s.label == "User").set_value(name)
    next(s for s in at.selectbox if s.label == "New role").set_value("viewer")
    next(b for b in at.button if b.label == "Apply").click()
    at.run()
    assert not at.error
    next(s for s in at.selectbox if s.label == "User").set_value(name)
    next(r for r in at.radio if r.label == "Change").set_value("Disable")
    next(b for b in at.button if b.label == "Apply").click()
    at.run()
    got = next(u for u in org_users(engine, scope) if u["username"] == name)
    assert (got["role"], got["disabled"]) == ("viewer", True)
    assert "admin-user" not in next(s for s in at.selectbox if s.label == "User").options
