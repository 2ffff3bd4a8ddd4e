"""The Exports page: start an export from a link's filters, watch it finish, download it."""

from datetime import timedelta

from streamlit.testing.v1 import AppTest

from observatory_core.accounts.users import scope_for
from observatory_core.exports.jobs import list_exports
from observatory_core.exports.worker import WorkerConfig, work_once
from observatory_core.filters.spec import FilterSpec
from tests.ui.test_app import login, start


def open_exports(role: str, params=None) -> AppTest:
    at = login(start(), f"{role}-user")
    at.switch_page("pages/exports.py")
    for key, value in (params or {}).items():
        at.query_params[key] = value
    return at.run()


def test_export_from_link_filters_runs_and_offers_a_download(app_env, tmp_path):
    engine, _ = app_env
    scope = scope_for(engine, "developer-user")
    # the app's database is shared with other page tests, which may leave jobs of their own
    before = {j["id"] for j in list_exports(engine, scope)}
    at = open_exports("developer", {"models": ["gpt-4o"], "relative": "7d"})
    assert not at.exception
    form_select = next(s for s in at.selectbox if s.label == "Format")
    form_select.set_value("jsonl")
    next(b for b in at.button if b.label == "Start export").click()
    at.run()
    jobs = [j for j in list_exports(engine, scope) if j["id"] not in before]
    assert len(jobs) == 1 and jobs[0]["format"] == "jsonl" and jobs[0]["compression"] == "gzip"
    assert FilterSpec.from_json(jobs[0]["filter_json"]).models == ("gpt-4o",)
    assert any("pending" in m.value for m in at.markdown)
    config = WorkerConfig(export_dir=tmp_path, heartbeat_timeout=timedelta(seconds=30))
    assert work_once(engine, config) == "completed"
    while work_once(engine, config) == "completed":  # another test's job ran first: ours too
        pass
    (ours,) = [j for j in list_exports(engine, scope) if j["id"] == jobs[0]["id"]]
    assert ours["status"] == "completed"
    at.run()
    links = [b for b in at.get("link_button")]
    assert links and links[0].proto.url.startswith("/exports/download/")


def test_viewer_sees_the_list_but_no_form(app_env):
    at = open_exports("viewer")
    assert not at.exception
    assert not [b for b in at.button if b.label == "Start export"]
    assert "Your org's exports" in [h.value for h in at.subheader]
    assert not [f for f in at.get("form") if "repeat" in str(f.proto)]


def test_admin_sees_statistics(app_env):
    at = open_exports("admin")
    assert not at.exception
    assert any(e.label == "Export statistics (admins)" for e in at.expander)
    assert {m.label for m in at.metric} >= {"Exports (30 days)", "Success rate"}


def test_a_job_that_needed_a_retry_shows_its_attempt(app_env):
    from sqlalchemy import update

    from observatory_core.exports.jobs import create_export
    from observatory_core.storage.schema import export_jobs

    engine, _ = app_env
    scope = scope_for(engine, "developer-user")
    job = create_export(engine, scope, FilterSpec(relative="7d"))
    with engine.begin() as conn:  # as a worker does when it starts the job over
        conn.execute(
            update(export_jobs)
            .where(export_jobs.c.id == job["id"])
            .values(status="processing", attempts=2)
        )
    at = open_exports("developer")
    assert not at.exception
    assert any("attempt 2" in c.value for c in at.caption)


def test_viewer_is_told_why_a_file_with_costs_is_not_offered(app_env, tmp_path):
    """A developer's export holding total_cost_usd: the viewer's list shows the reason where the
    Download button would be, and the core refuses the download (the signed link's route and the
    API call the same check)."""
    import pytest

    from observatory_core.base.errors import PermissionDenied
    from observatory_core.exports.jobs import create_export, download_target

    engine, _ = app_env
    developer = scope_for(engine, "developer-user")
    job = create_export(
        engine, developer, FilterSpec(relative="1h"), fields=["span_id", "total_cost_usd"]
    )
    config = WorkerConfig(export_dir=tmp_path, heartbeat_timeout=timedelta(seconds=30))
    while work_once(engine, config) is not None:
        pass
    viewer = scope_for(engine, "viewer-user")
    with pytest.raises(PermissionDenied, match="total_cost_usd"):
        download_target(engine, viewer, job["id"], tmp_path)
    at = open_exports("viewer")
    assert not at.exception, at.exception
    reasons = [c.value for c in at.caption if f"Export {job['id']} holds total_cost_usd" in c.value]
    assert reasons and "costs:read" in reasons[0]
    developer_page = open_exports("developer")
    assert developer_page.get("link_button")  # the same file is offered to its own role


def test_repeat_this_export_is_listed_with_its_next_run_on_the_users_clock(app_env):
    """A developer in New York repeats the link's export weekly: the schedule keeps the filter
    without its window, the list shows the next Monday's midnight in EST or EDT, a viewer sees
    it without buttons, and its owner pauses and deletes it."""
    from datetime import UTC, date, datetime, time
    from zoneinfo import ZoneInfo

    from observatory_core.accounts.preferences import set_user_zone
    from observatory_core.exports.schedules import list_schedules

    engine, _ = app_env
    scope = scope_for(engine, "developer-user")
    set_user_zone(engine, scope, "America/New_York")
    try:
        at = open_exports("developer", {"operations": ["chat"], "relative": "7d"})
        assert not at.exception
        next(t for t in at.text_input if t.label == "Name").input("weekly chats")
        next(s for s in at.selectbox if s.label == "Repeat").set_value("weekly")
        at.selectbox(key="repeat_format").set_value("jsonl")
        hook = next(t for t in at.text_input if t.label == "Webhook URL (optional)")
        hook.input("https://hooks.example.com/services/T0/B0/x")
        next(b for b in at.button if b.label == "Save repeating export").click()
        at.run()
        assert not at.exception and not at.error, [e.value for e in at.error]
        (made,) = list_schedules(engine, scope)
        assert (made["name"], made["cadence"], made["format"], made["time_zone"]) == (
            "weekly chats",
            "weekly",
            "jsonl",
            "America/New_York",
        )
        spec = FilterSpec.from_json(made["filter_json"])
        assert (spec.relative, spec.start, spec.operations) == (None, None, ("chat",))

        ny = ZoneInfo("America/New_York")
        today: date = datetime.now(UTC).astimezone(ny).date()
        monday = date.fromordinal(today.toordinal() + 7 - today.weekday())
        shown = datetime.combine(monday, time(), tzinfo=ny).strftime("%Y-%m-%d %H:%M %Z")
        at.run()
        assert any(f"Next run {shown}" in c.value for c in at.caption)
        assert any(
            "weekly chats" in m.value and "by developer-user" in m.value for m in at.markdown
        )

        viewer = open_exports("viewer")
        assert any("weekly chats" in m.value for m in viewer.markdown)
        assert not [b for b in viewer.button if b.label in ("Pause", "Delete")]

        from observatory_core.exports.schedules import announce_ready, run_due

        (job_id,) = run_due(engine, made["next_run_at"])
        assert announce_ready(engine, {"id": job_id, "schedule_id": made["id"]})
        at.run()
        assert any(c.value.startswith("Last webhook: pending ") for c in at.caption)
        # an ordinary job in the list, saying what it is a run of, on the reader's clock
        assert any(f"#{job_id}" in m.value for m in at.markdown)
        assert any(
            "A run of a repeating export: the period from" in c.value
            and ("EST" in c.value or "EDT" in c.value)
            for c in at.caption
        )
        next(b for b in at.button if b.label == "Pause").click()
        at.run()
        assert not list_schedules(engine, scope)[0]["enabled"]
        assert any("paused" in m.value for m in at.markdown)
        next(b for b in at.button if b.label == "Delete").click()
        at.run()
        assert list_schedules(engine, scope) == []
    finally:
        from sqlalchemy import delete

        from observatory_core.storage.schema import export_jobs, webhook_deliveries

        set_user_zone(engine, scope, None)
        with engine.begin() as conn:  # the data is shared by the module's other tests
            conn.execute(delete(export_jobs).where(export_jobs.c.period_start.is_not(None)))
            conn.execute(delete(webhook_deliveries).where(webhook_deliveries.c.rule_id.is_(None)))
        for row in list_schedules(engine, scope):
            from observatory_core.exports.schedules import delete_schedule

            delete_schedule(engine, scope, row["id"])


def test_the_list_refreshes_quickly_only_while_a_job_waits_or_runs():
    """Every 2 s a running job's progress moves; with nothing running the list is redrawn only
    every 30 s, so a Download button is not replaced under the pointer every 2 s."""
    from observatory_core.ui.exports_view import IDLE_EVERY, RUNNING_EVERY, refresh_seconds

    done = [{"status": "completed"}, {"status": "failed"}, {"status": "cancelled"}]
    assert refresh_seconds(done) == IDLE_EVERY == 30
    assert refresh_seconds([]) == IDLE_EVERY
    assert refresh_seconds([*done, {"status": "pending"}]) == RUNNING_EVERY == 2
    assert refresh_seconds([{"status": "processing"}, *done]) == RUNNING_EVERY
