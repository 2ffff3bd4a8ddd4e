"""Custom dashboards in the browser (issue 20: "a 6-chart dashboard at 1M spans renders in
<= 1.5 s in the browser on PostgreSQL"): the real server (`streamlit run server.py`) on an
existing PostgreSQL database of `--size` demo spans, driven by Debian's Chromium through
Playwright, from `page.goto` of a dashboard's link to the moment its 6 charts are drawn.

Each run is a new page (a new Streamlit session) in the browser of its own bench admin, so
the page's metrics cache (`ui/cached.py`, keyed by the reader's scope) has none of the run's
answers and every chart is computed; each user first opens a dashboard over a day that is not
timed, so the sidebar's value lists (cached 5 minutes per scope) and the browser's cache of
the app's scripts are warm, as for a person coming from another page. The browser's zone is Asia/Tokyo, whose midnight is 15:00 UTC, the
demo data's END: the links give the periods explicitly (the sidebar keeps them as whole local
days), so they end at END: Cost by team over 7 and 30 days, Latency SLOs over 24 hours, as
bench/dashboard_case.py times the server side. The database is only read, except that the
starter dashboards, the floor's two one-chart dashboards (`FLOORS`) and the bench users are
added if missing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

from bench.case import END, demo_org_and_size, median_p95
from observatory_core.accounts.permissions import Role
from observatory_core.accounts.scope import Scope
from observatory_core.accounts.users import add_user, set_password
from observatory_core.base.errors import UserError
from observatory_core.base.settings import get_settings
from observatory_core.dashboards.model import from_dict
from observatory_core.dashboards.store import create_dashboard, list_dashboards
from observatory_core.demo.starter_dashboards import install_starter_dashboards
from observatory_core.filters.spec import FilterSpec
from observatory_core.storage.engine import get_engine
from tests.e2e.conftest import CHROMIUM, CHROMIUM_ARGS, IDLE
from tests.live_server import running_server

RUNS = 7  # timed, after one warm-up run
ORG = "acme"  # the demo org bench.case.demo_org_and_size reads
USERS = tuple(f"bench-ui-{i}" for i in range(RUNS + 1))
PASSWORD = "bench-ui-password-2026"
ZONE = "Asia/Tokyo"  # UTC+9 all year: its midnight is END (15:00 UTC)
VIEWPORT = {"width": 1400, "height": 900}
# operation: (dashboard, days ending at END, numbers, Vega charts, tables)
CASES = {
    "dashboard_ui_cost_by_team_7d": ("Cost by team", 7, 3, 2, 1),
    "dashboard_ui_cost_by_team_30d": ("Cost by team", 30, 3, 2, 1),
    "dashboard_ui_latency_slos_24h": ("Latency SLOs", 1, 2, 4, 0),
    # The floor under those: the same page and server with one number (the app's start, the
    # log-in check, the sidebar, one query) and with one small Vega pie (that, plus loading
    # and drawing the charting code), so the time a dashboard adds of its own reads apart.
    "dashboard_ui_floor_one_number_24h": ("Bench: one number", 1, 1, 0, 0),
    "dashboard_ui_floor_one_pie_24h": ("Bench: one pie", 1, 0, 1, 0),
}
# The floor's dashboards, added by `prepare` if missing.
FLOORS = (
    {
        "version": 1,
        "name": "Bench: one number",
        "columns": 1,
        "charts": [{"title": "Requests", "kind": "number", "series": "request_count.count"}],
    },
    {
        "version": 1,
        "name": "Bench: one pie",
        "columns": 1,
        "charts": [
            {
                "title": "Requests by provider",
                "kind": "pie",
                "series": "request_count.count",
                "group_by": ["provider"],
            }
        ],
    },
)
# Every number, Vega chart (its marks drawn: SVG paths, or a canvas for a chart Streamlit
# draws on one) and table (with its canvas) drawn, the caption the page writes after its grid
# shown, and the script's run over (nothing running or stale).
VEGA = '[data-testid="stVegaLiteChart"]'
DRAWN = f"""([numbers, plots, tables]) => {{
    const drawn = (selector, inner) => [...document.querySelectorAll(selector)]
        .filter(e => e.querySelector(inner)).length;
    return document.querySelectorAll('[data-testid="stMetric"]').length === numbers
        && drawn('{VEGA}', 'svg .role-mark path, svg .role-mark text, canvas') === plots
        && drawn('[data-testid="stDataFrame"]', 'canvas') === tables
        && document.body.innerText.includes(' · computed in ')
        && ({IDLE})();
}}"""
# On the way: the sidebar's period shown (the session started, the script at the filters), then
# the grid's first chart with its data (a number's value, a plot or a table; each cell waits
# with its title until its data is read).
STAGES = {
    "sidebar": """() => !!document.querySelector(
        '[data-testid="stSidebar"] [data-testid="stSelectbox"]')""",
    "first_chart": f"""() => [...document.querySelectorAll('[data-testid="stMetricValue"]')]
        .some(e => e.textContent.trim() !== '…')
        || !!document.querySelector('{VEGA}, [data-testid="stDataFrame"]')""",
}
COMPUTED = re.compile(r"\d+ charts? · computed in ([\d,]+) ms")


def prepare(url: str) -> tuple[int, dict[str, int]]:
    """The starter dashboards and the bench admins (with a known password); the database's
    size and the dashboards' ids."""
    engine = get_engine(url)
    install_starter_dashboards(engine)
    for name in USERS:
        try:
            add_user(engine, ORG, name, "admin", password=PASSWORD, actor="bench")
        except UserError:  # made by an earlier run
            set_password(engine, name, PASSWORD, actor="bench")
    org_id, size = demo_org_and_size(engine)
    scope = Scope(org_id, Role.ADMIN, username="bench")
    have = {d["name"] for d in list_dashboards(engine, scope)}
    for floor in FLOORS:
        if floor["name"] not in have:
            create_dashboard(engine, scope, from_dict(floor))
    ids = {d["name"]: d["id"] for d in list_dashboards(engine, scope)}
    engine.dispose()
    return size, ids


def link(base: str, dashboard_id: int, days: int, end=END) -> str:
    """The dashboard over `days` whole days ending at `end`, as the sidebar writes it."""
    spec = FilterSpec(relative=None, start=end - timedelta(days=days), end=end)
    return f"{base}/dashboards?" + urlencode(
        {"d": dashboard_id, **spec.to_query_params()}, doseq=True
    )


def log_in(browser, base: str, username: str):
    """A browser context logged in on the start page, once the login cookie is written (a run
    after the log-in; a try whose cookie is not written in 30 s is made again)."""
    name = get_settings().cookie_name
    for _ in range(3):
        context = browser.new_context(viewport=VIEWPORT, timezone_id=ZONE)
        page = context.new_page()
        page.goto(base + "/")
        page.get_by_role("textbox", name="Username").fill(username)
        page.get_by_role("textbox", name="Password").fill(PASSWORD)
        page.get_by_role("button", name="Login").click()
        page.get_by_text("Last 24 hours").first.wait_for(timeout=60_000)
        for _ in range(300):
            if any(c["name"] == name for c in context.cookies()):
                page.close()
                return context
            page.wait_for_timeout(100)
        page.screenshot(path=f"/tmp/bench-ui-login-{username}.png", full_page=True)
        context.close()
    raise SystemExit(f"{username}: no login cookie after 3 log-ins")


def _params(url: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(url).query)


def open_dashboard(context, url: str, expect: tuple[int, int, int]) -> dict[str, float]:
    """Open `url` in a new page (a new Streamlit session); ms until every chart is drawn
    ("drawn"), until each of STAGES, and the page's own 'computed in' ms (loading the charts'
    data). Checked once settled: the counts, the period kept."""
    page = context.new_page()
    try:
        started = time.perf_counter()
        page.goto(url)
        ms = {}
        for stage, shown in STAGES.items():
            page.wait_for_function(shown, polling="raf", timeout=120_000)
            ms[stage] = (time.perf_counter() - started) * 1000
        page.wait_for_function(DRAWN, arg=list(expect), polling="raf", timeout=120_000)
        ms["drawn"] = (time.perf_counter() - started) * 1000
        page.wait_for_timeout(300)
        page.wait_for_function(DRAWN, arg=list(expect), timeout=30_000)
        if page.get_by_text("Traceback").count() or _params(page.url) != _params(url):
            raise SystemExit(f"{url}: not shown as asked (now {page.url})")
        computed = COMPUTED.search(page.locator("body").inner_text())
        assert computed is not None
        return {**ms, "computed": float(computed.group(1).replace(",", ""))}
    finally:
        page.close()


def main() -> None:
    from playwright.sync_api import sync_playwright

    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True, help="PostgreSQL holding the demo spans")
    parser.add_argument("--size", type=int, required=True)
    args = parser.parse_args()
    load_start = os.getloadavg()
    size, ids = prepare(args.url)
    entries = []
    with (
        tempfile.TemporaryDirectory() as tmp,
        running_server(args.url, Path(tmp), OBSERVATORY_EMBEDDED_WORKER="0") as base,
        sync_playwright() as p,
    ):
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        contexts = {user: log_in(browser, base, user) for user in USERS}
        untimed = link(base, ids["Latency SLOs"], 1, END - timedelta(days=20))
        # each user's sidebar value lists, its browser's cache of the app's scripts, the
        # server's imports
        for user in USERS:
            open_dashboard(contexts[user], untimed, (2, 4, 0))
        for operation, (name, days, *expect) in CASES.items():
            url = link(base, ids[name], days)
            runs = [open_dashboard(contexts[user], url, tuple(expect)) for user in USERS][1:]
            median, p95 = median_p95([r["drawn"] for r in runs])
            entry = {
                "operation": operation,
                "database": "postgresql",
                "size": size,
                "median_ms": median,
                "p95_ms": p95,
                "rows_per_s": None,
                "runs": RUNS,
                "samples_ms": [round(r["drawn"], 1) for r in runs],
                "peak_rss_mb": None,  # the server's is not this process's
            }
            for part in ("sidebar", "first_chart", "computed"):
                entry[f"{part}_median_ms"], entry[f"{part}_p95_ms"] = median_p95(
                    [r[part] for r in runs]
                )
            entries.append(entry)
        browser.close()
    load_end = os.getloadavg()
    for e in entries:
        e["load_1m_start"], e["load_1m_end"] = round(load_start[0], 2), round(load_end[0], 2)
    print(json.dumps(entries))


if __name__ == "__main__":
    main()
