"""Login and the current user's scope, with every failure shown as one sentence."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec

import streamlit as st
import streamlit_authenticator as stauth
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

from observatory_core.errors import UserError
from observatory_core.scope import Scope
from observatory_core.settings import get_settings
from observatory_core.storage.budget import budgeted, time_budget
from observatory_core.storage.engine import check_connection, describe_failure, get_engine
from observatory_core.storage.migrate import upgrade
from observatory_core.ui import nav
from observatory_core.users import authenticator_credentials, scope_for

P = ParamSpec("P")

WRONG_LOGIN = (
    "Wrong username or password. Try again, or ask an admin to reset it with "
    "`python -m observatory_core user passwd NAME`."
)


@st.cache_resource(show_spinner=False)
def _ready_engine(database_url: str) -> Engine:
    engine = get_engine(database_url)
    check_connection(engine)
    upgrade(engine)
    return engine


def engine() -> Engine:
    """The app's engine, connected and migrated once per process; each statement of a page is
    stopped at the read budget, so a slow query ends in a message, not an endless spinner."""
    settings = get_settings()
    return _budgeted_engine(settings.database_url, settings.read_budget_s)


@functools.lru_cache(maxsize=4)
def _budgeted_engine(url: str, seconds: float) -> Engine:
    return budgeted(_ready_engine(url), seconds)


def stop_with(message: str) -> None:
    st.error(message, icon=":material/error:")
    st.stop()


def require_login() -> Scope:
    """Show the login form until the user is in; return their scope."""
    try:
        settings = get_settings()
        cookie_key = settings.require_cookie_key()
        db = engine()
        authenticator = stauth.Authenticate(
            authenticator_credentials(db),
            settings.cookie_name,
            cookie_key,
            settings.cookie_expiry_days,
            auto_hash=False,
            login_sleep_time=0,
        )
    except UserError as exc:
        stop_with(str(exc))
    st.session_state["_authenticator"] = authenticator
    was_in = bool(st.session_state.get("authentication_status"))
    if not was_in:
        nav.hold_link()
        st.title("LLM Observatory")
        st.caption("Cost, latency and errors of your LLM applications.")
    authenticator.login(location="main", key="login")
    status = st.session_state.get("authentication_status")
    if status is False:
        stop_with(WRONG_LOGIN)
    if not status:
        st.stop()
    if not was_in:
        # Logged in during this run: start a clean run (no login banner, and st.navigation
        # may only be called once per run). The rerun would cut off the cookie component
        # the login just drew, so the cookie is set on that next, complete run instead.
        st.session_state["_cookie_pending"] = True
        st.rerun()
    if st.session_state.pop("_cookie_pending", False):
        authenticator.cookie_controller.set_cookie()
    try:
        return scope_for(db, st.session_state["username"])
    except UserError as exc:
        stop_with(str(exc))


def current_scope() -> Scope:
    """The scope set by the router; pages call this instead of logging in again."""
    scope = st.session_state.get("scope")
    if scope is None:
        st.switch_page("app.py")
    return scope


def run(page) -> None:
    """Run the chosen page under the read budget (a slow query stops with a message instead
    of a spinner); a failure it did not expect still reads as one sentence."""
    try:
        with time_budget(get_settings().read_budget_s):
            page.run()
    except UserError as exc:
        stop_with(str(exc))
    except OperationalError as exc:
        stop_with(describe_failure(engine().url, exc))


def guarded(fragment: Callable[P, None]) -> Callable[P, None]:
    """For self-refreshing fragments, which rerun outside the page's error handling: a slow or
    failed read is shown as its sentence in place of the fragment."""

    @functools.wraps(fragment)
    def run_fragment(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            fragment(*args, **kwargs)
        except UserError as exc:
            st.error(str(exc), icon=":material/error:")

    return run_fragment


def logout_button() -> None:
    authenticator = st.session_state.get("_authenticator")
    if authenticator is not None:
        # Not key="logout": streamlit-authenticator keeps its own session_state["logout"].
        authenticator.logout("Log out", location="sidebar", key="logout_button")
