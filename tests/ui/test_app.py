"""The router, the login and the home page, driven through Streamlit's AppTest."""

import re

import pytest
from streamlit.testing.v1 import AppTest

from observatory_core.accounts.users import scope_for
from observatory_core.base.settings import get_settings
from observatory_core.reports.summary import home_summary
from observatory_core.ui import format
from tests.ui.conftest import ROOT


def start(page: str = "pages/home.py") -> AppTest:
    """Open the app at a page, as a browser opening that page's URL does."""
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.switch_page(page)
    at.run()
    return at


def login(at: AppTest, username: str, password: str | None = None) -> AppTest:
    """Enter the app as `username`: the server-side session a password log-in opens.

    The login form itself is driven in the real browser by tests/e2e and in
    tests/ui/test_login_page.py: AppTest does not route st.navigation the way a browser does.
    """
    from observatory_core.base.settings import get_settings
    from observatory_core.storage.engine import get_engine
    from tests.helpers import open_session

    at.session_state["_sid"] = open_session(get_engine(get_settings().database_url), username)
    return at.run()


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def test_login_form_is_shown_first(app_env):
    at = start()
    assert not at.exception
    assert [t.label for t in at.text_input] == ["Username", "Password"]
    assert not at.metric


@pytest.mark.parametrize("role", ["admin", "developer", "billing"])
def test_home_shows_the_core_numbers_for_the_last_24_hours(app_env, role):
    engine, passwords = app_env
    at = login(start(), f"{role}-user", passwords[role])
    assert not at.exception and not at.error
    shown = metrics(at)
    caption = next(c.value for c in at.caption if " UTC." in c.value)
    end = re.search(r"to (\d{4}-\d\d-\d\d \d\d:\d\d) UTC", caption).group(1)
    from datetime import UTC, datetime

    now = datetime.strptime(end, "%Y-%m-%d %H:%M").replace(tzinfo=UTC)
    expected = home_summary(engine, scope_for(engine, f"{role}-user"), now=now).current
    assert expected.requests > 100
    assert shown["Requests"] == format.count(expected.requests)
    assert shown["Traces"] == format.count(expected.traces)
    assert shown["Error rate"] == format.rate(expected.error_rate)
    assert shown["p95 latency"] == format.duration_ms(expected.p95_ms)
    assert shown["Cost"] == format.money(expected.cost_usd)


def test_viewer_sees_no_cost(app_env):
    _, passwords = app_env
    at = login(start(), "viewer-user", passwords["viewer"])
    assert "Cost" not in metrics(at)
    assert "Requests" in metrics(at)


def test_users_of_different_orgs_see_different_numbers(app_env):
    _, passwords = app_env
    acme = metrics(login(start(), "admin-user", passwords["admin"]))
    globex = metrics(login(start(), "globex-admin", passwords["other-org"]))
    assert acme["Requests"] != globex["Requests"]


def test_missing_login_secret_says_how_to_set_it(app_env, monkeypatch):
    monkeypatch.delenv("OBSERVATORY_COOKIE_KEY")
    get_settings.cache_clear()
    at = start()
    assert not at.exception
    assert "No login secret is set" in at.error[0].value
    assert "secrets.toml" in at.error[0].value


def test_unreachable_database_is_one_sentence_not_a_traceback(app_env, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:1/observatory")
    get_settings.cache_clear()
    at = start()
    assert not at.exception
    assert "Cannot reach PostgreSQL at 127.0.0.1:1" in at.error[0].value
