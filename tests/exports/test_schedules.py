"""Repeating exports: period boundaries against polars' calendar arithmetic (UTC, New York
across both clock changes, Kolkata); a due schedule makes exactly one job, also with two
workers at once, holding the explorer's rows of that period; roles at each run; the "file is
ready" webhook received by a local HTTP server. One demo load per store for the module."""

from __future__ import annotations

import csv
import io
import threading
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from observatory_core.accounts.permissions import Role
from observatory_core.accounts.scope import Scope
from observatory_core.accounts.users import add_user, scope_for, set_role
from observatory_core.alerts.webhooks import deliver_due
from observatory_core.base.errors import PermissionDenied, UserError
from observatory_core.base.zones import Zone
from observatory_core.exports.jobs import get_export
from observatory_core.exports.schedules import (
    create_schedule,
    delete_schedule,
    get_schedule,
    last_delivery,
    list_schedules,
    next_run,
    period_of,
    previous_period,
    run_due,
    set_enabled,
)
from observatory_core.exports.worker import WorkerConfig, claim_next, run_job
from observatory_core.filters.spec import FilterSpec
from observatory_core.storage.schema import export_jobs, export_schedules, webhook_deliveries
from tests.alerts.conftest import allow_hosts, loopback_allowed, webhook  # noqa: F401 (fixtures)
from tests.helpers import END, all_spans, empty_database, load_small_demo

NY = Zone("America/New_York")
ZONES = [Zone("UTC"), NY, Zone("Asia/Kolkata")]
TRUNCATE = {"daily": ("1d", "1d"), "weekly": ("1w", "1w"), "monthly": ("1mo", "1mo")}


# ---- periods --------------------------------------------------------------------------


def _instants() -> list[datetime]:
    """Every 7 hours through 2026: across both of New York's clock changes and every month."""
    start = datetime(2026, 1, 1, tzinfo=UTC)
    return [start + timedelta(hours=7 * i) for i in range(365 * 24 // 7)]


@pytest.mark.parametrize("cadence", ["daily", "weekly", "monthly"])
@pytest.mark.parametrize("zone", ZONES, ids=lambda z: z.name)
def test_periods_match_polars_calendar_arithmetic(zone, cadence):
    instants = _instants()
    unit, step = TRUNCATE[cadence]
    local = pl.Series(instants).dt.convert_time_zone(zone.name)
    starts = local.dt.truncate(unit)
    frame = pl.DataFrame(
        {
            "start": starts.dt.convert_time_zone("UTC"),
            "end": starts.dt.offset_by(step).dt.convert_time_zone("UTC"),
            "before": starts.dt.offset_by(f"-{step}").dt.convert_time_zone("UTC"),
        }
    )
    for t, want in zip(instants, frame.iter_rows(named=True), strict=True):
        assert period_of(cadence, zone, t) == (want["start"], want["end"]), t
        assert previous_period(cadence, zone, t) == (want["before"], want["start"]), t
        assert next_run(cadence, zone, t) == want["end"]


def test_new_york_days_and_weeks_are_wall_clock_periods():
    spring = datetime(2026, 3, 8, 12, tzinfo=UTC)
    autumn = datetime(2026, 11, 1, 12, tzinfo=UTC)
    hours = lambda p: (p[1] - p[0]) / timedelta(hours=1)  # noqa: E731
    assert hours(period_of("daily", NY, spring)) == 23
    assert hours(period_of("daily", NY, autumn)) == 25
    assert hours(previous_period("daily", NY, datetime(2026, 3, 9, 5, tzinfo=UTC))) == 23
    assert hours(period_of("weekly", NY, spring)) == 7 * 24 - 1  # Mon Mar 2 to Mon Mar 9
    assert period_of("monthly", NY, autumn) == (
        datetime(2026, 11, 1, 4, tzinfo=UTC),  # midnight EDT
        datetime(2026, 12, 1, 5, tzinfo=UTC),  # midnight EST
    )
    kolkata = previous_period("daily", Zone("Asia/Kolkata"), datetime(2026, 11, 20, tzinfo=UTC))
    assert kolkata == (
        datetime(2026, 11, 18, 18, 30, tzinfo=UTC),
        datetime(2026, 11, 19, 18, 30, tzinfo=UTC),
    )


# ---- runs -----------------------------------------------------------------------------

CREATED = END - timedelta(days=1)  # Nov 19 12:00Z, 07:00 in New York
DUE = datetime(2026, 11, 20, 5, 0, tzinfo=UTC)  # New York's midnight after Nov 19
SPEC = FilterSpec(relative="7d", operations=("chat",))


@pytest.fixture(scope="module")
def store(db_url):
    """The small demo (1,500 spans over the 2 days before END) and its people, per store."""
    engine = empty_database(db_url)
    load_small_demo(engine, spans_count=1500, days=2, seed=5)
    for name, role in (("dana", "developer"), ("bill", "billing"), ("vic", "viewer")):
        add_user(engine, "acme", name, role)
    add_user(engine, "acme", "ada", "admin")
    return engine


@pytest.fixture
def engine(store):
    with store.begin() as conn:
        for table in (webhook_deliveries, export_jobs, export_schedules):
            conn.execute(table.delete())
    return store


@pytest.fixture
def config(tmp_path):
    return WorkerConfig(export_dir=tmp_path / "exports", page_size=300, copy_page_size=300)


def _person(engine, name: str) -> Scope:
    return scope_for(engine, name)


def _daily(engine, who: str = "dana", **kw) -> dict:
    kw.setdefault("fmt", "csv")
    return create_schedule(
        engine, _person(engine, who), SPEC, cadence="daily", zone=NY, now=CREATED, **kw
    )


def _run_jobs(engine, config) -> None:
    while job := claim_next(engine, config):
        assert run_job(engine, job, config) == "completed"


def test_a_due_schedule_makes_one_job_of_the_explorers_rows(engine, config):
    schedule = _daily(engine, fields=["span_id", "start_time", "operation", "total_cost_usd"])
    assert schedule["next_run_at"] == DUE and schedule["enabled"]
    assert FilterSpec.from_json(schedule["filter_json"]) == FilterSpec(
        relative=None, operations=("chat",)
    )  # the time window is each run's
    assert run_due(engine, DUE - timedelta(seconds=1)) == []
    (job_id,) = run_due(engine, DUE + timedelta(minutes=1))
    assert run_due(engine, DUE + timedelta(minutes=2)) == []  # once per period
    assert get_schedule(engine, _person(engine, "dana"), schedule["id"])["next_run_at"] == (
        datetime(2026, 11, 21, 5, tzinfo=UTC)
    )
    _run_jobs(engine, config)
    dana = _person(engine, "dana")
    job = get_export(engine, dana, job_id)
    start, end = datetime(2026, 11, 19, 5, tzinfo=UTC), DUE
    assert (job["schedule_id"], job["period_start"], job["created_by"]) == (
        schedule["id"],
        start,
        "dana",
    )
    assert job["time_zone"] == NY.name
    spec = FilterSpec.from_json(job["filter_json"])
    assert (spec.start, spec.end, spec.operations) == (start, end, ("chat",))

    rows = list(csv.DictReader(io.StringIO((config.export_dir / job["file_name"]).read_text())))
    df = all_spans(engine)
    want = df.filter(
        (pl.col("org_id") == dana.org_id)
        & (pl.col("operation") == "chat")
        & (pl.col("start_time") >= start)
        & (pl.col("start_time") < end)
    )
    assert len(want) > 100
    assert sorted(r["span_id"] for r in rows) == sorted(want["span_id"].to_list())
    assert job["rows_written"] == len(rows)
    assert {r["start_time_local"][-6:] for r in rows} == {"-05:00"}  # the owner's clock


def test_two_workers_at_once_make_one_job(engine):
    schedule = _daily(engine)
    gate = threading.Barrier(2)
    made: list[list[int]] = []

    def worker():
        gate.wait()
        made.append(run_due(engine, DUE))

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(len(m) for m in made) == [0, 1]
    with engine.connect() as conn:
        jobs = conn.execute(
            select(export_jobs.c.id).where(export_jobs.c.schedule_id == schedule["id"])
        ).all()
    assert len(jobs) == 1
    # Even a worker that read the schedule before the move (here: put back) makes no second
    # job of the period: the unique index refuses it, and the schedule still moves on.
    with engine.begin() as conn:
        conn.execute(update(export_schedules).values(next_run_at=DUE))
    assert run_due(engine, DUE + timedelta(hours=1)) == []
    assert get_schedule(engine, _person(engine, "dana"), schedule["id"])["next_run_at"] > DUE
    with pytest.raises(IntegrityError), engine.begin() as conn:
        row = dict(conn.execute(select(export_jobs)).mappings().one())
        conn.execute(export_jobs.insert().values({k: v for k, v in row.items() if k != "id"}))


def test_a_late_worker_runs_the_latest_period_once(engine):
    _daily(engine)
    three_days_late = DUE + timedelta(days=3, hours=2)
    (job_id,) = run_due(engine, three_days_late)
    job = get_export(engine, _person(engine, "dana"), job_id)
    assert job["period_start"] == datetime(2026, 11, 22, 5, tzinfo=UTC)
    assert run_due(engine, three_days_late) == []


def test_roles_apply_to_every_run(engine, config):
    billing = create_schedule(
        engine, _person(engine, "bill"), FilterSpec(), cadence="weekly", zone=NY, now=CREATED
    )
    assert billing["fields"] is None  # the role's default columns, chosen at each run
    with pytest.raises(PermissionDenied, match=r"export input_text.*traces:read"):
        _daily(engine, "bill", fields=["start_time", "input_text"])
    with pytest.raises(PermissionDenied, match=r"'search'.*traces:read"):
        create_schedule(
            engine,
            _person(engine, "bill"),
            FilterSpec(search="refund"),
            cadence="daily",
            zone=NY,
        )
    with pytest.raises(PermissionDenied, match="exports:create"):
        _daily(engine, "vic")
    (job_id,) = run_due(engine, billing["next_run_at"])
    fields = get_export(engine, _person(engine, "bill"), job_id)["fields"]
    assert "total_cost_usd" in fields and not {"input_text", "output_text"} & set(fields)

    # A viewer sees the schedules (no costs in what they may download), cannot change them;
    # another developer cannot either; an admin can.
    dana = _daily(engine, fields=["span_id", "total_cost_usd"])
    assert {s["id"] for s in list_schedules(engine, _person(engine, "vic"))} == {
        billing["id"],
        dana["id"],
    }
    for who in ("vic", "bill"):
        with pytest.raises(PermissionDenied, match="Only dana, who set up"):
            set_enabled(engine, _person(engine, who), dana["id"], False)
    assert not set_enabled(engine, _person(engine, "ada"), dana["id"], False)["enabled"]
    assert run_due(engine, DUE) == []  # paused
    resumed = set_enabled(engine, _person(engine, "dana"), dana["id"], True, now=DUE)
    assert resumed["next_run_at"] == datetime(2026, 11, 21, 5, tzinfo=UTC)  # no catch-up

    # The owner became a viewer: the run stops, saying why, instead of exporting costs.
    set_role(engine, "dana", "viewer")
    try:
        assert run_due(engine, datetime(2026, 11, 21, 6, tzinfo=UTC)) == []
        stopped = get_schedule(engine, _person(engine, "ada"), dana["id"])
        assert not stopped["enabled"] and "exports:create" in stopped["last_error"]
    finally:
        set_role(engine, "dana", "developer")
    delete_schedule(engine, _person(engine, "dana"), dana["id"])
    assert [s["id"] for s in list_schedules(engine, _person(engine, "ada"))] == [billing["id"]]
    assert get_export(engine, _person(engine, "ada"), job_id)["schedule_id"] == billing["id"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cadence": "hourly"}, "Unknown cadence 'hourly'; choose daily, weekly, monthly"),
        ({"fmt": "xlsx"}, "Format 'xlsx' is not offered"),
        ({"name": "x" * 101}, "at most 100 characters"),
        ({"webhook_url": "ftp://example.com/x"}, "must be an http:// or https:// address"),
    ],
)
def test_bad_schedules_are_refused_with_the_fix(engine, kwargs, message):
    kwargs = {"cadence": "daily", **kwargs}
    with pytest.raises(UserError, match=message):
        create_schedule(engine, _person(engine, "dana"), SPEC, zone=NY, **kwargs)


def test_a_webhook_announces_the_ready_file(engine, config, webhook, loopback_allowed):  # noqa: F811
    schedule = _daily(engine, name="chat spans", webhook_url=webhook.url)
    (job_id,) = run_due(engine, DUE)
    assert deliver_due(engine) == 0  # nothing to say before the file is ready
    _run_jobs(engine, config)
    assert deliver_due(engine) == 1
    (body,) = webhook.bodies
    job = get_export(engine, _person(engine, "dana"), job_id)
    assert body["export"] == {
        "job_id": job_id,
        "schedule_id": schedule["id"],
        "schedule": "chat spans",
        "period": "2026-11-19",
        "period_start": "2026-11-19T05:00:00+00:00",
        "period_end": "2026-11-20T05:00:00+00:00",
        "time_zone": NY.name,
        "format": "csv",
        "compression": "none",
        "rows": job["rows_written"],
        "file_size": job["file_size"],
        "checksum_sha256": job["checksum_sha256"],
        "expires_at": job["expires_at"].isoformat(),
        "download_url": f"/api/v1/export/jobs/{job_id}/download",
    }
    assert body["text"].startswith(":package: Export ready: chat spans (2026-11-19)")
    assert deliver_due(engine) == 0  # delivered once
    sent = last_delivery(engine, _person(engine, "vic"), schedule["id"])
    assert (sent["status"], sent["attempts"], sent["last_status_code"]) == ("delivered", 1, 200)
    stranger = Scope(org_id=-1, role=Role.ADMIN, username="eve")
    assert last_delivery(engine, stranger, schedule["id"]) is None


def test_a_schedule_that_cannot_run_pauses_itself_and_the_others_run(engine):
    broken, fine = _daily(engine, name="broken"), _daily(engine, name="fine")
    with engine.begin() as conn:  # a zone this machine's zone database no longer knows
        conn.execute(
            update(export_schedules)
            .where(export_schedules.c.id == broken["id"])
            .values(time_zone="Mars/Olympus")
        )
    (job_id,) = run_due(engine, DUE)
    assert get_export(engine, _person(engine, "dana"), job_id)["schedule_id"] == fine["id"]
    paused = get_schedule(engine, _person(engine, "dana"), broken["id"])
    assert not paused["enabled"] and "Unknown time zone 'Mars/Olympus'" in paused["last_error"]
