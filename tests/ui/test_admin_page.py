"""The Admin page: a key is shown once and works; revoking it stops it; others never see it."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from observatory_core.accounts.users import scope_for
from observatory_core.ingest.apikeys import BadKey, list_keys, verify_key
from tests.ui.test_app import login, start


def open_admin(role: str) -> AppTest:
    at = login(start(), f"{role}-user")
    at.switch_page("pages/admin.py")
    return at.run()


def test_admin_creates_a_key_sees_it_once_and_revokes_it(app_env):
    engine, _ = app_env
    at = open_admin("admin")
    assert not at.exception
    at.text_input[0].set_value("checkout exporter")
    next(b for b in at.button if b.label == "Create key").click()
    at.run()
    shown = [c.value for c in at.code if c.value.startswith("obs_")]
    assert len(shown) == 1
    key = shown[0]
    assert verify_key(engine, key, "ingest").org_id
    assert any(key in c.value for c in at.code if "OTEL_EXPORTER_OTLP_TRACES_HEADERS" in c.value)
    table = at.dataframe[0].value
    assert "checkout exporter" in table["name"].to_list()
    assert key not in table.to_string()

    next(b for b in at.button if b.label == "I have stored it").click()
    at.run()
    assert not [c for c in at.code if c.value.startswith("obs_")]  # never shown again

    scope = scope_for(engine, "admin-user")
    created = next(k for k in list_keys(engine, scope) if key.startswith(k["prefix"]))
    next(s for s in at.selectbox if s.label == "Revoke a key").set_value(created["id"])
    next(b for b in at.button if b.label == "Revoke").click()
    at.run()
    assert not at.exception
    with pytest.raises(BadKey, match="revoked"):
        verify_key(engine, key, "ingest")


def test_a_bad_name_gets_a_message_not_a_key(app_env):
    at = open_admin("admin")
    next(b for b in at.button if b.label == "Create key").click()
    at.run()
    assert not at.exception
    assert any("Give the key a name" in e.value for e in at.error)
    assert not [c for c in at.code if c.value.startswith("obs_")]


@pytest.mark.parametrize("role", ["developer", "viewer", "billing"])
def test_non_admins_have_no_admin_page(app_env, role):
    at = login(start(), f"{role}-user")
    with pytest.raises(ValueError, match="Could not find a navigation page"):
        at.switch_page("pages/admin.py")


def test_admin_declares_a_dimension_and_sees_its_backfill(app_env):
    """Issue 19: the Admin page declares a key, shows the back-fill's progress, removes it."""
    from observatory_core.rollups.dimensions import backfill_step, list_dimensions

    engine, _ = app_env
    at = open_admin("admin")
    field = next(t for t in at.text_input if t.label == "Key")
    field.set_value("metadata:region")
    next(b for b in at.button if b.label == "Declare as a dimension").click()
    at.run()
    assert not at.exception, at.exception
    assert any("declared" in s.value for s in at.success)
    scope = scope_for(engine, "admin-user")
    assert [d["key"] for d in list_dimensions(engine, scope)] == ["metadata:region"]
    while backfill_step(engine) is not None:
        pass
    at.run()
    bars = [p for p in at.get("progress")]
    assert any("Ready" in str(p.proto.text) for p in bars)
    next(b for b in at.button if b.label == "Remove").click()
    at.run()
    while backfill_step(engine) is not None:
        pass
    assert list_dimensions(engine, scope) == []
