"""Users and Sessions in Chromium: a person finds a user, clicks through to their traces in
the explorer, and opens a session as a conversation."""

import re
from urllib.parse import parse_qs, urlparse

import pytest
from playwright.sync_api import expect

from observatory_core.accounts.users import scope_for
from observatory_core.filters.spec import FilterSpec
from observatory_core.traces.sessions import get_session, list_sessions
from observatory_core.traces.users import list_users
from tests.e2e.conftest import ARTIFACTS, open_logged_in

pytestmark = pytest.mark.browser


def _click_first_row(page) -> None:
    grid = page.locator('[data-testid="stDataFrame"]').first
    grid.wait_for(timeout=30_000)
    box = grid.bounding_box()
    page.mouse.click(box["x"] + 18, box["y"] + 35 + 17)  # the first row's selection cell


def test_find_a_user_and_open_their_traces(live_server, page):
    engine = live_server["engine"]
    scope = scope_for(engine, live_server["user"])
    busiest = list_users(engine, scope, FilterSpec(relative="7d"), limit=1).rows[0]["user_id"]
    needle = busiest.split("@")[0]
    expected = list_users(engine, scope, FilterSpec(relative="7d"), id_contains=needle)
    open_logged_in(page, live_server, "/users?relative=7d")
    page.get_by_text(re.compile(r"of [\d,]+ users")).first.wait_for(timeout=30_000)
    box = page.get_by_role("textbox", name="Find a user")
    box.fill(needle)
    box.press("Enter")
    page.get_by_text(f"of {expected.total:,} users").first.wait_for(timeout=30_000)
    assert f"find={needle}" in page.url.replace("%40", "@")
    _click_first_row(page)
    first = expected.rows[0]["user_id"]
    page.get_by_text(f"User {first}").wait_for(timeout=30_000)
    page.get_by_role("link", name="Their traces").click()
    page.wait_for_url(re.compile(r"/traces\?"), timeout=30_000)
    page.get_by_text(re.compile(r"Page 1 · \d+ rows")).first.wait_for(timeout=30_000)
    query = parse_qs(urlparse(page.url).query)
    assert query["user_ids"] == [first] and query["mode"] == ["traces"]
    assert query["relative"] == ["7d"]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "user-traces.png"), full_page=True)


def test_open_a_session_as_a_conversation(live_server, page):
    engine = live_server["engine"]
    scope = scope_for(engine, live_server["user"])
    first = list_sessions(engine, scope, FilterSpec(relative="7d"), limit=1).rows[0]["session_id"]
    detail = get_session(engine, scope, first)
    open_logged_in(page, live_server, "/sessions?relative=7d")
    page.get_by_text(re.compile(r"of [\d,]+ sessions")).first.wait_for(timeout=30_000)
    _click_first_row(page)
    page.get_by_text(f"Session {first}").wait_for(timeout=30_000)
    messages = page.locator('[data-testid="stChatMessage"]')
    # waited for, not counted once: a loaded machine drew the first turn's two messages and
    # not yet the second's (3 of 4) when the first appeared
    expect(messages).to_have_count(2 * len(detail.turns), timeout=30_000)
    said = detail.turns[0]["input_text"] or "(no input text)"
    assert said[:40] in messages.first.inner_text()
    assert f"session={first}" in page.url
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "session-conversation.png"), full_page=True)
