"""Rules: bad input gets a message naming the field; permissions; system rules; backtest."""

from __future__ import annotations

from datetime import timedelta

import polars as pl
import pytest

from observatory_core.accounts.permissions import Role
from observatory_core.alerts.backtest import backtest
from observatory_core.alerts.evaluate import evaluate
from observatory_core.alerts.history import active_alerts
from observatory_core.alerts.loops import beat
from observatory_core.alerts.rules import (
    build_rule,
    create_rule,
    delete_rule,
    list_rules,
    update_rule,
)
from observatory_core.base.errors import PermissionDenied, UserError
from observatory_core.ingest.counts import record_rejections
from observatory_core.storage.schema import export_jobs
from tests.alerts.conftest import NOW, add_spans
from tests.helpers import admin_scope

GOOD = dict(name="p95", series="duration_ms.p95", comparator=">", threshold="2500", window_s=300)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"threshold": "fast"}, "Threshold must be a number"),
        ({"threshold": "nan"}, "Threshold must be a finite number"),
        ({"window_s": 30}, "Window (seconds) must be between 60 and 86400"),
        ({"window_s": 86401}, "between 60 and 86400"),
        ({"series": "request_count.p95"}, "p95 does not fit request_count"),
        ({"series": "latency.p95"}, "Unknown metric 'latency'"),
        ({"comparator": "=="}, "Comparator '==' must be one of"),
        ({"webhook_url": "ftp://example.org/hook"}, "must be an http:// or https:// address"),
        ({"webhook_url": "javascript:alert(1)"}, "must be an http:// or https:// address"),
        ({"group_by": "colour"}, "Cannot group by 'colour'"),
        ({"pending_s": -1}, "Pending period (seconds) must be between 0"),
        ({"name": ""}, "Name the rule"),
        ({"name": "System: mine"}, "Name the rule"),
        ({"name": "p95\x00"}, "A rule's name holds control characters"),  # PostgreSQL: no NUL
        ({"name": "p95 \ud800"}, "A rule's name is not valid text"),
    ],
)
def test_bad_rules_say_what_to_fix(change, message):
    with pytest.raises(UserError) as caught:
        build_rule(**{**GOOD, **change})
    assert message in str(caught.value)


def test_only_managers_write_and_system_rules_are_fixed(org):
    engine, org_id, _ = org
    with pytest.raises(PermissionDenied):
        create_rule(engine, admin_scope(org_id, Role.VIEWER), build_rule(**GOOD))
    with pytest.raises(PermissionDenied):  # billing may read alerts but not manage them
        create_rule(engine, admin_scope(org_id, Role.BILLING), build_rule(**GOOD))
    rule_id = create_rule(engine, admin_scope(org_id, Role.DEVELOPER), build_rule(**GOOD))
    with pytest.raises(UserError, match="exists already"):
        create_rule(engine, admin_scope(org_id), build_rule(**GOOD))
    update_rule(engine, admin_scope(org_id), rule_id, build_rule(**{**GOOD, "threshold": 100}))
    evaluate(engine, NOW)
    rules = {r["name"]: r for r in list_rules(engine, admin_scope(org_id))}
    assert rules["p95"]["threshold"] == 100
    system = rules["System: export failure rate"]
    with pytest.raises(UserError, match="System rules cannot be edited"):
        delete_rule(engine, admin_scope(org_id), system["id"])
    viewer_sees = {r["name"] for r in list_rules(engine, admin_scope(org_id, Role.VIEWER))}
    assert "System: no worker heartbeat" not in viewer_sees  # admin-only
    assert "System: export failure rate" in viewer_sees  # exports:read


def test_system_rules_fire_on_failed_exports_rejections_and_silent_workers(org):
    engine, org_id, _ = org
    with engine.begin() as conn:
        for i, status in enumerate(["failed", "completed", "completed", "failed"]):
            conn.execute(
                export_jobs.insert().values(
                    org_id=org_id,
                    created_by="x",
                    filter_json="{}",
                    format="csv",
                    compression="none",
                    fields=[],
                    row_limit=10,
                    status=status,
                    snapshot_max_id=0,
                    snapshot_at=NOW,
                    created_at=NOW - timedelta(minutes=30),
                    finished_at=NOW - timedelta(minutes=10 + i),
                )
            )
    record_rejections(engine, org_id, accepted=4, rejected=1, now=NOW - timedelta(minutes=1))
    beat(engine, "worker-1", now=NOW - timedelta(minutes=5))
    evaluate(engine, NOW)
    evaluate(engine, NOW, kinds="heartbeat")
    firing = {a["system_kind"]: a for a in active_alerts(engine, admin_scope(org_id))}
    assert firing["export_failure_rate"]["last_value"] == pytest.approx(0.5)
    assert firing["ingest_rejections"]["last_value"] == 1
    assert firing["worker_heartbeat"]["last_value"] == pytest.approx(300)
    beat(engine, "worker-1", now=NOW + timedelta(seconds=1))
    evaluate(engine, NOW + timedelta(seconds=5), kinds="heartbeat")
    firing = {a["system_kind"] for a in active_alerts(engine, admin_scope(org_id))}
    assert "worker_heartbeat" not in firing
    developer = {
        a["system_kind"] for a in active_alerts(engine, admin_scope(org_id, Role.DEVELOPER))
    }
    assert developer == {"export_failure_rate"}


def test_backtest_counts_firings_on_the_bucket_series(org):
    engine, org_id, project = org
    for hours_ago in (30, 29, 5):  # two slow hours in a row, then one more later
        add_spans(engine, org_id, project, minutes_ago=hours_ago * 60, count=6, duration_ms=5000.0)
    for hours_ago in range(1, 48, 3):
        add_spans(
            engine, org_id, project, minutes_ago=hours_ago * 60 + 30, count=6, duration_ms=200.0
        )
    spec = build_rule(
        name="bt", series="duration_ms.p95", comparator=">", threshold=1000, window_s=3600
    )
    result = backtest(engine, admin_scope(org_id), spec, days=7, now=NOW)
    assert result.bucket == "1hour"
    slow = result.frame.filter(pl.col("value") > 1000)
    assert slow.height == 3 and result.fired == 2  # 30 and 29 hours ago are one episode
    assert result.frame.filter(pl.col("firing")).height == 3


def test_backtest_steps_through_whole_buckets_only(org):
    """A replay over a span of time that starts mid-bucket (the demo's fractional days) starts
    at the next whole bucket: a cut bucket counts part of its hour as if it were all of it."""
    engine, org_id, project = org
    for hours_ago in range(20):
        add_spans(engine, org_id, project, minutes_ago=hours_ago * 60 + 30, count=8, status="error")
    spec = build_rule(
        name="errors", series="error_count.count", comparator="<", threshold=5, window_s=3600
    )
    result = backtest(engine, admin_scope(org_id), spec, days=0.6, now=NOW)  # from 21:36
    assert result.frame["bucket"].min() == NOW - timedelta(hours=14)  # 22:00, whole
    assert result.frame["value"].to_list() == [8] * 14
    assert result.fired == 0  # the cut 21:00 bucket held no error and fired
