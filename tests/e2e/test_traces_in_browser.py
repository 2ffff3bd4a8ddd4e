"""A shared Traces link survives the login; clicking a row opens the trace with its timeline."""

import re

import pytest

from observatory_core.accounts.users import scope_for
from observatory_core.filters.spec import FilterSpec
from observatory_core.traces.query import list_spans
from tests.e2e.conftest import ARTIFACTS

pytestmark = pytest.mark.browser


def test_shared_link_survives_login_and_a_row_opens_its_trace(live_server, page):
    base = live_server["base"]
    # Streamlit learns the page list from the first session after a start; a first visit
    # makes sure this session is not that one (see the README's known limits).
    page.goto(base + "/")
    page.get_by_role("textbox", name="Username").wait_for(timeout=30_000)
    link = f"{base}/traces?relative=7d&operations=chat&models=gpt-4o-mini"
    page.goto(link)
    page.get_by_role("textbox", name="Username").fill(live_server["user"])
    page.get_by_role("textbox", name="Password").fill(live_server["password"])
    page.get_by_role("button", name="Login").click()
    grid = page.locator('[data-testid="stDataFrame"]')
    grid.wait_for(timeout=30_000)
    assert page.url == link
    engine = live_server["engine"]
    expected = list_spans(
        engine,
        scope_for(engine, live_server["user"]),
        FilterSpec(relative="7d", operations=("chat",), models=("gpt-4o-mini",)),
        limit=50,
    )
    assert expected.rows
    caption = page.get_by_text(re.compile(r"Page 1 · \d+ rows")).first.inner_text()
    assert f"{len(expected.rows)} rows" in caption
    box = grid.bounding_box()
    page.mouse.click(box["x"] + 18, box["y"] + 35 + 17)  # the first row's selection cell
    first = expected.rows[0]["trace_id"]
    page.get_by_text(f"Trace {first}").wait_for(timeout=30_000)
    page.locator(".js-plotly-plot").first.wait_for(timeout=30_000)
    assert f"trace={first}" in page.url
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "trace-detail.png"), full_page=True)
