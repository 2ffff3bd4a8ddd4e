"""Log out in Chromium: the session ends on the server, so the cookie the browser had is
refused afterwards even if someone kept a copy, and a reload shows the login form."""

import urllib.error
import urllib.request

import pytest

from observatory_core.accounts.users import scope_for
from observatory_core.base.settings import get_settings
from observatory_core.exports.links import sign_download
from tests.e2e.conftest import open_logged_in
from tests.live_server import COOKIE_KEY

pytestmark = pytest.mark.browser


def _status(url: str, cookie: str) -> int:
    request = urllib.request.Request(url, headers={"Cookie": f"observatory_auth={cookie}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_log_out_ends_the_session_on_the_server(live_server, page):
    base, engine = live_server["base"], live_server["engine"]
    open_logged_in(page, live_server, "/", fresh=True)  # its own session: it ends it
    page.get_by_text("Last 24 hours").first.wait_for(timeout=30_000)
    name = get_settings().cookie_name
    kept = next(c["value"] for c in page.context.cookies() if c["name"] == name)
    org_id = scope_for(engine, live_server["user"]).org_id
    link = f"{base}/exports/download/{sign_download(COOKIE_KEY, 987654, org_id)}"
    assert _status(link, kept) == 404  # logged in: the link is checked, no such export
    page.get_by_role("button", name="Log out").click()
    page.get_by_role("textbox", name="Username").wait_for(timeout=30_000)
    page.get_by_text("You logged out").wait_for(timeout=30_000)
    assert _status(link, kept) == 401  # the copied cookie is worthless now
    page.reload()
    page.get_by_role("textbox", name="Username").wait_for(timeout=30_000)
    assert page.get_by_text("Last 24 hours").count() == 0
