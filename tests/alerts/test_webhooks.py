"""Webhooks against a local HTTP server: Slack-compatible body, retries with backoff after
failures and timeouts, a delivery log, muted rules silent, and evaluation never waits."""

from __future__ import annotations

from datetime import timedelta

import pytest

from observatory_core.alerts import webhooks
from observatory_core.alerts.evaluate import evaluate
from observatory_core.alerts.rules import mute_rule
from observatory_core.alerts.webhooks import deliver_due, delivery_log
from tests.alerts.conftest import NOW, firing_rule
from tests.helpers import admin_scope

# The receivers here listen on 127.0.0.1: allowed explicitly, as an admin would allow a host.
pytestmark = pytest.mark.usefixtures("loopback_allowed")


def test_firing_sends_a_slack_compatible_body_once(org, webhook):
    engine, org_id, project = org
    rule_id = firing_rule(engine, org_id, project, webhook.url)
    evaluate(engine, NOW)
    assert webhook.bodies == []  # evaluation only queues: a webhook never delays it
    assert deliver_due(engine, NOW) == 1
    (body,) = webhook.bodies
    assert body["text"].startswith(":red_circle: FIRING: slow calls")
    assert body["attachments"][0]["color"] == "#d93f0b"
    assert body["alert"]["state"] == "firing" and body["alert"]["value"] == 4000.0
    assert body["alert"]["threshold"] == 1000 and body["alert"]["series"] == "duration_ms.p95"
    assert deliver_due(engine, NOW + timedelta(minutes=5)) == 0  # delivered: not sent again
    (logged,) = delivery_log(engine, admin_scope(org_id), rule_id)
    assert (logged["status"], logged["attempts"], logged["last_status_code"]) == (
        "delivered",
        1,
        200,
    )


def test_failures_are_retried_with_backoff_then_given_up(org, webhook):
    engine, org_id, project = org
    rule_id = firing_rule(engine, org_id, project, webhook.url)
    evaluate(engine, NOW)
    webhook.statuses = [500, 503]
    assert deliver_due(engine, NOW) == 1
    assert (
        deliver_due(engine, NOW + timedelta(seconds=4)) == 0
    )  # backoff: 5 s after the 1st failure
    assert deliver_due(engine, NOW + timedelta(seconds=5)) == 1
    assert deliver_due(engine, NOW + timedelta(seconds=14)) == 0  # then 10 s
    assert deliver_due(engine, NOW + timedelta(seconds=15)) == 1
    (logged,) = delivery_log(engine, admin_scope(org_id), rule_id)
    assert (logged["status"], logged["attempts"]) == ("delivered", 3)
    assert len(webhook.bodies) == 3

    webhook.statuses = [500] * 10
    evaluate(engine, NOW + timedelta(minutes=30))  # resolves (the spans left the window)
    at = NOW + timedelta(minutes=30)
    for _ in range(webhooks.MAX_ATTEMPTS):
        deliver_due(engine, at)
        at += timedelta(minutes=5)
    latest = delivery_log(engine, admin_scope(org_id), rule_id)[0]
    assert (latest["status"], latest["attempts"], latest["last_error"]) == ("failed", 5, "HTTP 500")


def test_a_slow_receiver_times_out_and_is_retried(org, webhook, monkeypatch):
    engine, org_id, project = org
    monkeypatch.setattr(webhooks, "TIMEOUT_S", 0.5)
    rule_id = firing_rule(engine, org_id, project, webhook.url)
    evaluate(engine, NOW)
    webhook.delay_s = 2.0
    deliver_due(engine, NOW)
    (logged,) = delivery_log(engine, admin_scope(org_id), rule_id)
    assert logged["status"] == "pending" and logged["attempts"] == 1
    assert "timed out" in logged["last_error"].lower()
    webhook.delay_s = 0
    deliver_due(engine, NOW + timedelta(seconds=5))
    assert delivery_log(engine, admin_scope(org_id), rule_id)[0]["status"] == "delivered"


def test_an_unreachable_receiver_is_logged_not_raised(org):
    engine, org_id, project = org
    rule_id = firing_rule(engine, org_id, project, "http://127.0.0.1:9/nothing-listens-here")
    evaluate(engine, NOW)
    deliver_due(engine, NOW)
    (logged,) = delivery_log(engine, admin_scope(org_id), rule_id)
    assert logged["status"] == "pending" and "refused" in logged["last_error"].lower()


def test_muted_rules_fire_silently(org, webhook):
    engine, org_id, project = org
    rule_id = firing_rule(engine, org_id, project, webhook.url)
    mute_rule(engine, admin_scope(org_id), rule_id, NOW + timedelta(hours=1))
    evaluate(engine, NOW)
    deliver_due(engine, NOW)
    assert webhook.bodies == [] and delivery_log(engine, admin_scope(org_id), rule_id) == []


def test_a_database_lost_after_sending_means_sent_again_not_lost(org, webhook, db_url):
    """The receiver answered, then the database dropped before the answer was recorded (on
    PostgreSQL the server terminates the sender's connections; SQLite is held locked by another
    writer): the round fails with a transient error, and the delivery goes out again once its
    60 s lease runs out. At least once, never lost."""
    import sqlite3

    from sqlalchemy import text

    from observatory_core.storage.engine import get_engine
    from observatory_core.storage.transient import is_transient

    engine, org_id, project = org
    rule_id = firing_rule(engine, org_id, project, webhook.url)
    evaluate(engine, NOW)
    blocker = []
    if engine.dialect.name == "postgresql":
        sender = get_engine(f"{db_url}?application_name=obs_webhook_sender_test")

        def cut():
            with engine.connect() as conn:
                conn.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE application_name = 'obs_webhook_sender_test'"
                    )
                )

    else:
        sender = engine

        def cut():
            lock = sqlite3.connect(engine.url.database, timeout=0.1, isolation_level=None)
            lock.execute("BEGIN IMMEDIATE")
            blocker.append(lock)

    def post_then_cut(url, data, timeout):
        status = webhooks.http_post(url, data, timeout)
        cut()
        return status

    with pytest.raises(Exception) as lost:
        deliver_due(sender, NOW, post=post_then_cut)
    assert is_transient(lost.value)
    for lock in blocker:
        lock.rollback()
        lock.close()
    assert len(webhook.bodies) == 1
    assert deliver_due(sender, NOW + timedelta(seconds=30)) == 0  # still leased
    assert deliver_due(sender, NOW + timedelta(seconds=61)) == 1
    (logged,) = delivery_log(engine, admin_scope(org_id), rule_id)
    assert (logged["status"], logged["attempts"]) == ("delivered", 1)
    assert len(webhook.bodies) == 2
