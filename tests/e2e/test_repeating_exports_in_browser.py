"""A person in New York repeats an export from the Exports page and sees it listed with its
next run on their clock, then pauses it; through the real server."""

import re
from datetime import UTC, date, datetime, time
from zoneinfo import ZoneInfo

import pytest

from observatory_core.accounts.users import scope_for
from observatory_core.exports.schedules import delete_schedule, list_schedules
from observatory_core.filters.spec import FilterSpec
from tests.e2e.conftest import ARTIFACTS, open_logged_in, settle

pytestmark = pytest.mark.browser
NY = ZoneInfo("America/New_York")


def _choose(page, label: str, option: str) -> None:
    """Pick a select box's option. The job list refreshes itself every 2 s, and a refresh
    while the list of options is open can take it away under the click: open it again."""
    for _ in range(5):
        page.get_by_role("combobox", name=label).click()
        try:
            page.get_by_role("option", name=option).click(timeout=3_000)
            return
        except Exception:
            page.keyboard.press("Escape")
    raise AssertionError(f"could not choose {option!r} in {label!r}")


def test_repeat_an_export_weekly_and_see_it_listed(live_server, browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, timezone_id=NY.key)
    page = context.new_page()
    engine = live_server["engine"]
    scope = scope_for(engine, live_server["user"])
    try:
        open_logged_in(page, live_server, "/exports?relative=7d&models=gpt-4o-mini")
        page.get_by_role("heading", name="Exports", exact=True).wait_for(timeout=30_000)
        settle(page)
        page.get_by_text("Repeat this export", exact=True).first.click()
        page.get_by_role("textbox", name="Name").fill("weekly mini")
        _choose(page, "Repeat", "Weekly (Mondays)")
        page.get_by_role("textbox", name="Webhook URL (optional)").fill(
            "https://hooks.example.com/services/T0/B0/x"
        )
        page.get_by_role("button", name="Save repeating export").click()

        today: date = datetime.now(UTC).astimezone(NY).date()
        monday = date.fromordinal(today.toordinal() + 7 - today.weekday())
        shown = datetime.combine(monday, time(), tzinfo=NY).strftime("%Y-%m-%d %H:%M %Z")
        next_run = page.get_by_text(re.compile(r"^Next run ")).first
        next_run.wait_for(timeout=30_000)
        assert next_run.inner_text().strip() == f"Next run {shown}"
        page.get_by_text("weekly mini").first.wait_for(timeout=5_000)
        settle(page)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "repeating_exports.png"), full_page=True)
        errors = page.locator('[data-testid="stAlertContentError"], [data-testid="stException"]')
        assert errors.all_inner_texts() == []

        (made,) = list_schedules(engine, scope)
        assert (made["name"], made["cadence"], made["time_zone"]) == (
            "weekly mini",
            "weekly",
            "America/New_York",
        )
        assert FilterSpec.from_json(made["filter_json"]) == FilterSpec(
            relative=None, models=("gpt-4o-mini",)
        )
        assert made["webhook_url"] == "https://hooks.example.com/services/T0/B0/x"

        resume = page.get_by_role("button", name="Resume")
        for _ in range(3):  # a click during the job list's own refresh can be superseded
            page.get_by_role("button", name="Pause").click(timeout=30_000)
            try:
                resume.wait_for(timeout=10_000)
                break
            except Exception:
                continue
        resume.wait_for(timeout=1_000)
        assert page.get_by_text("⏸️ paused").count() == 1
        assert not list_schedules(engine, scope)[0]["enabled"]
    finally:
        context.close()
        for row in list_schedules(engine, scope):
            delete_schedule(engine, scope, row["id"])
