"""Login and the current user's scope, with every failure shown as one sentence.

Passwords are checked by observatory_core/accounts/login.py (throttled per username and address,
audited). The browser keeps a signed cookie naming a server-side session
(observatory_core/accounts/sessions.py) that every page run checks, so logging out, idling past the
limit or being disabled ends the login on the server, whatever the browser still holds.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import ParamSpec

import extra_streamlit_components as stx
import streamlit as st
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

from observatory_core.accounts import audit, sessions
from observatory_core.accounts.login import WRONG_LOGIN, log_in, log_out
from observatory_core.accounts.login_cookie import claims_from_cookie, make_cookie
from observatory_core.accounts.scope import Scope
from observatory_core.accounts.users import scope_for
from observatory_core.base.errors import UserError
from observatory_core.base.settings import Settings, get_settings
from observatory_core.rollups.upgrade import upgrade
from observatory_core.storage.budget import budgeted, time_budget
from observatory_core.storage.engine import check_connection, describe_failure, get_engine
from observatory_core.storage.span_reads import span_reads
from observatory_core.ui import nav

P = ParamSpec("P")
__all__ = [
    "WRONG_LOGIN",
    "current_scope",
    "engine",
    "logout_button",
    "require_login",
    "run",
    "span_engine",
]

# What the login page says when a session it found has ended (None: nothing).
ENDED = {
    "idle": "Your session ended after {minutes:g} minutes without activity; log in again.",
    "logout": "You logged out. Log in again to continue.",
    "disabled": "Your account is disabled; ask an admin of your org.",
    "password": "Your password was changed; log in with the new one.",
    "gone": None,
}


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


def span_engine() -> Engine:
    """Where the pages read spans and rollups (Traces, Metrics and the dashboards, Home,
    Overview, what changed, cost attribution, a rule's backtest): the span store's when
    OBSERVATORY_SPAN_STORE is set (docs/scale.md), stopped at the same read budget."""
    settings = get_settings()
    return budgeted(span_reads(_ready_engine(settings.database_url)), settings.read_budget_s)


@functools.lru_cache(maxsize=4)
def _budgeted_engine(url: str, seconds: float) -> Engine:
    return budgeted(_ready_engine(url), seconds)


def stop_with(message: str) -> None:
    st.error(message, icon=":material/error:")
    st.stop()


def _address() -> str | None:
    try:
        address = st.context.ip_address
    except Exception:  # no browser behind this run
        return None
    return address if isinstance(address, str) else None  # AppTest has a stand-in object


def _cookie_session(settings: Settings, cookie_key: str) -> str | None:
    """The session id the browser's login cookie names, unless this tab ignores it."""
    try:
        token = st.context.cookies.get(settings.cookie_name)
    except Exception:
        token = None
    claims = claims_from_cookie(token if isinstance(token, str) else None, cookie_key)
    if claims is None or claims["sid"] == st.session_state.get("_ignored_sid"):
        return None
    return claims["sid"]


def _cookies(key: str) -> stx.CookieManager:
    return stx.CookieManager(key=f"cookies_{key}")


# How long after a log-in every run keeps the component that writes the cookie on the page.
COOKIE_WRITE = timedelta(minutes=2)


def _write_cookie(settings: Settings) -> None:
    """Set (after a log-in) or delete (after a log-out) the cookie, from the run after the one
    that decided it: a rerun would cut off the component that writes it. The setter stays on
    every run for `COOKIE_WRITE`: a busy machine took over 30 s to load its frame, and a run
    in between (a click, a page) would otherwise drop it before it wrote anything."""
    pending = st.session_state.get("_cookie_pending")
    if pending:
        token, until = pending
        if datetime.now(UTC) < until:
            expires = datetime.now() + timedelta(days=settings.cookie_expiry_days)
            _cookies("set").set(settings.cookie_name, token, key="cookie_set", expires_at=expires)
        else:
            del st.session_state["_cookie_pending"]
    if st.session_state.pop("_cookie_delete", False):
        with contextlib.suppress(KeyError):  # the browser had none
            _cookies("delete").delete(settings.cookie_name, key="cookie_delete")


def _login_form(db: Engine, settings: Settings, cookie_key: str, address: str | None) -> None:
    nav.hold_link()
    st.title("LLM Observatory")
    st.caption("Cost, latency and errors of your LLM applications.")
    # kept until the user logs in: a rerun of the form (the cookie component's, on its first
    # load) must not take it away before it is read (the browser test missed it under load)
    notice = st.session_state.get("_login_notice")
    if notice:
        st.info(notice, icon=":material/info:")
    with st.form("login"):
        st.subheader("Login")
        username = st.text_input("Username", autocomplete="username")
        password = st.text_input("Password", type="password", autocomplete="current-password")
        submitted = st.form_submit_button("Login")
    _write_cookie(settings)
    if not submitted:
        st.stop()
    result = log_in(db, username, password, address)
    if not result.ok:
        stop_with(result.message)
    st.session_state.pop("_login_notice", None)
    expires = datetime.now(UTC) + timedelta(days=settings.cookie_expiry_days)
    st.session_state["_sid"] = result.session_id
    st.session_state["username"] = result.username
    st.session_state["_cookie_pending"] = (
        make_cookie(result.username, result.session_id, cookie_key, expires),
        datetime.now(UTC) + COOKIE_WRITE,
    )
    # A clean run for the app (no login form; st.navigation may be called once per run).
    st.rerun()


def require_login() -> Scope:
    """Show the login form until the user is in; return their scope."""
    try:
        settings = get_settings()
        cookie_key = settings.require_cookie_key()
        db = engine()
    except UserError as exc:
        stop_with(str(exc))
    address = _address()
    audit.client_address.set(address)
    session_id = st.session_state.get("_sid") or _cookie_session(settings, cookie_key)
    if session_id:
        idle = timedelta(minutes=settings.session_idle_minutes)
        resumed = sessions.resume(db, session_id, idle)
        if resumed.username:
            st.session_state["_sid"] = session_id
            st.session_state["username"] = resumed.username
            _write_cookie(settings)
            try:
                return scope_for(db, resumed.username)
            except UserError as exc:
                stop_with(str(exc))
        st.session_state.pop("_sid", None)
        st.session_state["_ignored_sid"] = session_id
        text = ENDED.get(resumed.reason)
        if text:
            st.session_state["_login_notice"] = text.format(minutes=settings.session_idle_minutes)
    _login_form(db, settings, cookie_key, address)
    raise AssertionError("unreachable: the login form stops or reruns")


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
    """Log out: the session ends on the server, then the browser's cookie is deleted."""
    if st.sidebar.button("Log out", key="logout_button"):
        session_id = st.session_state.pop("_sid", None)
        log_out(engine(), session_id, _address())
        st.session_state["_ignored_sid"] = session_id
        st.session_state["_cookie_delete"] = True
        st.session_state["_login_notice"] = ENDED["logout"]
        st.session_state.pop("scope", None)
        st.rerun()
