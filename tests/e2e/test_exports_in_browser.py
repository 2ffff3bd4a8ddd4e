"""From the Traces page to a downloaded file, through the real server and its worker."""

import gzip
import re
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta

import pytest

from observatory_core.accounts.users import scope_for
from observatory_core.exports.jobs import list_exports
from observatory_core.exports.links import sign_download
from observatory_core.filters.spec import FilterSpec
from observatory_core.traces.query import count_spans
from tests.e2e.conftest import ARTIFACTS, open_logged_in
from tests.helpers import login_cookie
from tests.live_server import COOKIE_KEY

pytestmark = pytest.mark.browser


def _get(url: str, cookie: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(
        url, headers={"Cookie": f"observatory_auth={cookie}"} if cookie else {}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_export_these_rows_then_download(live_server, page):
    base, engine = live_server["base"], live_server["engine"]
    open_logged_in(page, live_server, "/traces?relative=7d&models=gpt-4o-mini")
    page.locator('[data-testid="stDataFrame"]').wait_for(timeout=30_000)
    heading = page.get_by_role("heading", name="Exports", exact=True)
    for _ in range(3):  # a click during the cookie login's own rerun can be superseded
        page.get_by_role("button", name="Export these rows").click(timeout=30_000)
        try:
            heading.wait_for(timeout=10_000)
            break
        except Exception:
            continue
    heading.wait_for(timeout=1_000)
    assert re.search(r"/exports\?.*models=gpt-4o-mini", page.url)
    page.get_by_role("button", name="Start export").click()
    download = page.get_by_role("link", name="Download").first
    download.wait_for(
        timeout=60_000
    )  # the server's own worker finishes it; the list refreshes itself
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "exports.png"), full_page=True)
    errors = page.locator('[data-testid="stAlertContentError"], [data-testid="stException"]')
    assert errors.all_inner_texts() == []

    scope = scope_for(engine, live_server["user"])
    job = list_exports(engine, scope)[0]
    assert job["status"] == "completed" and FilterSpec.from_json(job["filter_json"]).models == (
        "gpt-4o-mini",
    )
    expected = count_spans(
        engine,
        scope,
        FilterSpec.from_json(job["filter_json"]),
        as_of=job["snapshot_at"],
        max_id=job["snapshot_max_id"],
    )
    href = download.get_attribute("href")
    url = href if href.startswith("http") else base + href
    response = page.request.get(url)  # with the browser's own login cookie
    assert response.status == 200
    lines = gzip.decompress(response.body()).decode().splitlines()
    assert len(lines) - 1 == job["rows_written"] == expected > 0
    assert "gpt-4o-mini" in lines[1]

    mine = login_cookie(engine, live_server["user"], COOKIE_KEY)
    stranger = login_cookie(engine, "e2e-stranger", COOKIE_KEY)
    assert _get(url, mine)[0] == 200
    assert _get(url)[0] == 401
    status, body = _get(url, stranger)
    assert status == 404 and b"No export" in body
    assert _get(url[:-3] + ("AAA" if not url.endswith("AAA") else "BBB"), mine)[0] == 403
    old = sign_download(
        COOKIE_KEY, job["id"], scope.org_id, now=datetime.now(UTC) - timedelta(hours=1)
    )
    status, body = _get(f"{base}/exports/download/{old}", mine)
    assert status == 403 and b"expired" in body
