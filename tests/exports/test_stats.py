"""Admin export statistics against an independent count of the jobs."""

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update

from observatory_core.accounts.permissions import Role
from observatory_core.accounts.scope import Scope
from observatory_core.base.errors import PermissionDenied
from observatory_core.exports.jobs import create_export
from observatory_core.exports.stats import export_stats
from observatory_core.exports.worker import work_once
from observatory_core.filters.spec import FilterSpec
from observatory_core.storage.schema import export_jobs


def test_pending_only_does_not_break_statistics(data, orgs):
    admin = Scope(org_id=orgs["acme"], role=Role.ADMIN, username="root")
    create_export(data, admin, FilterSpec(relative=None))
    stats = export_stats(data, admin)
    assert (stats.jobs, stats.success_rate, stats.warning) == (1, None, None)


def test_success_rate_formats_users_and_failure_warning(data, orgs, config):
    admin = Scope(org_id=orgs["acme"], role=Role.ADMIN, username="root")
    dana = Scope(org_id=orgs["acme"], role=Role.DEVELOPER, username="dana")
    for fmt in ("csv", "jsonl", "csv"):
        create_export(data, dana, FilterSpec(relative=None), fmt=fmt)
        assert work_once(data, config) == "completed"
    failed = [create_export(data, admin, FilterSpec(relative=None)) for _ in range(2)]
    now = datetime.now(UTC)
    with data.begin() as conn:
        conn.execute(
            update(export_jobs)
            .where(export_jobs.c.id.in_([j["id"] for j in failed]))
            .values(status="failed", started_at=now, finished_at=now, error_message="boom")
        )
    stats = export_stats(data, admin, now=now + timedelta(seconds=1))
    assert stats.jobs == 5
    assert stats.success_rate == pytest.approx(3 / 5)
    assert stats.last_hour_failure_rate == pytest.approx(2 / 5)
    assert stats.warning and "40% of exports failed" in stats.warning
    assert dict(stats.formats.select("format", "jobs").iter_rows()) == {"csv": 4, "jsonl": 1}
    assert dict(stats.users.select("created_by", "jobs").iter_rows()) == {"dana": 3, "root": 2}
    assert stats.durations["jobs"].sum() == 3 and stats.volume["jobs"].sum() == 5
    with pytest.raises(PermissionDenied):
        export_stats(data, dana)


def test_volume_is_per_day_of_the_readers_calendar(data, orgs):
    """A job made at 20:00 UTC is the next day's in Kathmandu (+05:45)."""
    from observatory_core.base.zones import Zone

    admin = Scope(org_id=orgs["acme"], role=Role.ADMIN, username="root")
    job = create_export(data, admin, FilterSpec(relative=None))
    made = datetime.now(UTC).replace(hour=20, minute=0, second=0, microsecond=0)
    made -= timedelta(days=1)
    with data.begin() as conn:
        conn.execute(
            update(export_jobs).where(export_jobs.c.id == job["id"]).values(created_at=made)
        )
    utc = export_stats(data, admin, zone=Zone("UTC")).volume["day"].to_list()
    local = export_stats(data, admin, zone=Zone("Asia/Kathmandu")).volume["day"].to_list()
    # every other job was made just now: yesterday (UTC) holds only this one, which is
    # today in Kathmandu
    assert made.date() in utc and made.date() not in local
    assert made.date() + timedelta(days=1) in local
