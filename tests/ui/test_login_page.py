"""The login form through AppTest: one message for wrong and unknown, a plain lock message,
log-out ending the session on the server, idle and disabled sessions sent back to the form."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import update
from streamlit.testing.v1 import AppTest

from observatory_core.accounts import sessions, throttle
from observatory_core.accounts.login import WRONG_LOGIN, log_out
from observatory_core.accounts.users import add_user, set_disabled
from observatory_core.storage.schema import user_sessions
from tests.ui.conftest import ROOT

PASSWORD = "form-password-123"


def start() -> AppTest:
    """The app at its root URL, where people log in (a deep link is held through the login
    by registering hidden pages, which AppTest does not route)."""
    return AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()


def _fresh_user(engine) -> str:
    name = f"form-{uuid.uuid4().hex[:8]}"
    add_user(engine, "acme", name, "developer", password=PASSWORD)
    return name


def _submit(at, username: str, password: str):
    fields = {t.label: t for t in at.text_input}
    fields["Username"].set_value(username)
    fields["Password"].set_value(password)
    next(b for b in at.button if b.label == "Login").click()
    return at.run()


def _errors(at) -> list[str]:
    return [e.value for e in at.error]


def test_wrong_password_and_unknown_user_read_the_same(app_env):
    engine, _ = app_env
    name = _fresh_user(engine)
    assert _errors(_submit(start(), name, "not-the-password")) == [WRONG_LOGIN]
    assert _errors(_submit(start(), f"ghost-{uuid.uuid4().hex[:6]}", "x" * 12)) == [WRONG_LOGIN]


def test_a_locked_username_is_told_for_how_long(app_env):
    engine, _ = app_env
    name = _fresh_user(engine)
    now = datetime.now(UTC)
    with engine.begin() as conn:
        for _ in range(throttle.USER.lock_after):
            throttle.fail(conn, throttle.USER, name, now)
    [message] = _errors(_submit(start(), name, PASSWORD))
    assert "Log-in is locked for this username after 5 failed attempts" in message
    assert "try again in 15 minutes" in message


def _opened_with(session_id: str) -> AppTest:
    """A page run of a browser tab holding `session_id` (as its cookie or an earlier log-in)."""
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.session_state["_sid"] = session_id
    return at.run()


def _shows_form_with(at: AppTest, notice: str) -> bool:
    return [t.label for t in at.text_input] == ["Username", "Password"] and any(
        notice in i.value for i in at.info
    )


def test_the_form_logs_in_and_a_logged_out_session_is_refused(app_env):
    engine, _ = app_env
    name = _fresh_user(engine)
    at = _submit(start(), name, PASSWORD)
    assert not at.exception and not _errors(at)
    session_id = at.session_state["_sid"]
    assert sessions.resume(engine, session_id, timedelta(hours=1)).username == name
    assert f"**{name}** · developer" in [m.value for m in at.sidebar.markdown]
    assert [b.label for b in at.sidebar.button] == ["Log out"]
    log_out(engine, session_id)  # what the button calls
    opened = _opened_with(session_id)
    assert _shows_form_with(opened, "You logged out")
    # a rerun of the form (the cookie component's first load makes one) keeps the notice
    assert _shows_form_with(opened.run(), "You logged out")


def test_an_idle_or_disabled_session_goes_back_to_the_form(app_env):
    engine, _ = app_env
    name = _fresh_user(engine)
    session_id = _submit(start(), name, PASSWORD).session_state["_sid"]
    with engine.begin() as conn:
        conn.execute(
            update(user_sessions)
            .values(last_seen_at=datetime.now(UTC) - timedelta(minutes=61))
            .where(user_sessions.c.id_hash == sessions._hash(session_id))
        )
    assert _shows_form_with(_opened_with(session_id), "ended after 60 minutes without activity")
    session_id = _submit(start(), name, PASSWORD).session_state["_sid"]
    assert not _opened_with(session_id).text_input  # still in
    set_disabled(engine, name, True)
    assert _shows_form_with(_opened_with(session_id), "account is disabled")


def test_a_new_role_applies_on_the_next_page_run(app_env):
    import pytest

    from observatory_core.accounts.users import set_role

    engine, _ = app_env
    name = _fresh_user(engine)
    set_role(engine, name, "admin")
    session_id = _submit(start(), name, PASSWORD).session_state["_sid"]
    at = _opened_with(session_id)
    at.switch_page("pages/admin.py")
    assert not at.run().exception
    set_role(engine, name, "viewer")
    at = _opened_with(session_id)  # the same session, a new role: no Admin page
    assert f"**{name}** · viewer" in [m.value for m in at.sidebar.markdown]
    with pytest.raises(ValueError, match="Could not find a navigation page"):
        at.switch_page("pages/admin.py")
