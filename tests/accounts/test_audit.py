"""The audit trail: every listed action leaves an entry with its before/after values; only
admins read it; filters; CSV; retention; nothing but the purge deletes or changes entries."""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from observatory_core.accounts import audit
from observatory_core.accounts.audit import AuditFilter, read_entries
from observatory_core.accounts.permissions import Role
from observatory_core.accounts.users import add_user, set_disabled, set_password, set_role, unlock
from observatory_core.alerts.rules import (
    build_rule,
    create_rule,
    delete_rule,
    mute_rule,
    update_rule,
)
from observatory_core.base.errors import PermissionDenied, UserError
from observatory_core.base.zones import Zone
from observatory_core.ingest.apikeys import create_key, revoke_key
from observatory_core.ingest.pricing import set_org_price
from observatory_core.reports.overview import set_budget
from observatory_core.storage.schema import audit_log
from tests.helpers import END, admin_scope, make_org

ROOT = Path(__file__).resolve().parents[2]


def _entries(engine, scope, action):
    return [
        (e["username"], e["subject"], e["before"], e["after"])
        for e in reversed(read_entries(engine, scope, AuditFilter(action=action)))
    ]


def test_user_changes_are_audited_with_before_and_after(engine):
    org_id, _ = make_org(engine, "acme")
    scope = admin_scope(org_id)
    add_user(engine, "acme", "dana", "developer", actor="boss")
    set_role(engine, "dana", "viewer", actor="boss")
    set_role(engine, "dana", "viewer", actor="boss")  # no change, no entry
    set_disabled(engine, "dana", True, actor="boss")
    set_disabled(engine, "dana", False, actor="boss")
    set_password(engine, "dana", "a-brand-new-pass", actor="boss")
    unlock(engine, "dana", actor="boss")
    assert _entries(engine, scope, "user.create") == [
        ("boss", "dana", None, {"role": "developer", "disabled": False})
    ]
    assert _entries(engine, scope, "user.role") == [
        ("boss", "dana", {"role": "developer"}, {"role": "viewer"})
    ]
    assert _entries(engine, scope, "user.disable") == [
        ("boss", "dana", {"disabled": False}, {"disabled": True})
    ]
    assert _entries(engine, scope, "user.enable") == [
        ("boss", "dana", {"disabled": True}, {"disabled": False})
    ]
    assert [e[:2] for e in _entries(engine, scope, "user.password")] == [("boss", "dana")]
    assert [e[:2] for e in _entries(engine, scope, "user.unlock")] == [("boss", "dana")]


def test_keys_prices_and_budgets_are_audited(engine):
    org_id, _ = make_org(engine, "acme")
    scope = admin_scope(org_id, username="ada")
    key = create_key(engine, scope, "exporter", scopes=("read",), role="viewer")
    created = _entries(engine, scope, "key.create")
    assert len(created) == 1 and created[0][0] == "ada"
    assert created[0][3] == {
        "name": "exporter",
        "prefix": key[:12],
        "scopes": "read",
        "role": "viewer",
        "project_id": None,
    }
    key_id = int(created[0][1])
    revoke_key(engine, scope, key_id)
    [(who, target, before, after)] = _entries(engine, scope, "key.revoke")
    assert (who, target, before) == ("ada", str(key_id), {"revoked_at": None})
    assert datetime.fromisoformat(after["revoked_at"]) > datetime.now(UTC) - timedelta(minutes=1)

    with engine.begin() as conn:
        set_org_price(conn, org_id, "OpenAI", "gpt-x", 1.0, 2.0, END, actor="ada")
        set_org_price(
            conn, org_id, "openai", "gpt-x", 1.5, 2.5, END + timedelta(days=1), actor="ada"
        )
    prices = _entries(engine, scope, "price.set")
    assert [p[:2] for p in prices] == [("ada", "openai/gpt-x")] * 2
    assert prices[0][2] is None
    assert prices[1][2]["input_usd_per_mtok"] == 1.0 and prices[1][3]["input_usd_per_mtok"] == 1.5

    set_budget(engine, scope, 100)
    set_budget(engine, scope, 250.5)
    assert _entries(engine, scope, "budget.set") == [
        ("ada", "monthly budget", {"monthly_usd": None}, {"monthly_usd": 100.0}),
        ("ada", "monthly budget", {"monthly_usd": 100.0}, {"monthly_usd": 250.5}),
    ]


def test_alert_rule_changes_are_audited_without_webhook_secrets(engine):
    org_id, _ = make_org(engine, "acme")
    scope = admin_scope(org_id, Role.DEVELOPER, username="dev")
    reader = admin_scope(org_id)
    spec = build_rule(
        name="slow",
        series="duration_ms.p95",
        comparator=">",
        threshold="2500",
        window_s=300,
        webhook_url="https://hooks.example.org/services/SECRET-TOKEN",
    )
    rule_id = create_rule(engine, scope, spec)
    update_rule(
        engine,
        scope,
        rule_id,
        build_rule(
            name="slow", series="duration_ms.p95", comparator=">", threshold="3000", window_s=600
        ),
    )
    mute_rule(engine, scope, rule_id, END)
    delete_rule(engine, scope, rule_id)
    [(who, target, _, after)] = _entries(engine, reader, "alert_rule.create")
    assert (who, target, after["threshold"], after["window_s"]) == (
        "dev",
        str(rule_id),
        2500.0,
        300,
    )
    assert after["webhook_url"] == "https://hooks.example.org/…"
    [(_, _, before, after)] = _entries(engine, reader, "alert_rule.update")
    assert before == {
        "threshold": 2500.0,
        "window_s": 300,
        "webhook_url": "https://hooks.example.org/…",
    }
    assert after == {"threshold": 3000.0, "window_s": 600, "webhook_url": None}
    [(_, _, before, after)] = _entries(engine, reader, "alert_rule.mute")
    assert before == {"muted_until": None} and after == {"muted_until": END.isoformat()}
    [(_, _, before, after)] = _entries(engine, reader, "alert_rule.delete")
    assert before["threshold"] == 3000.0 and before["name"] == "slow" and after is None
    every = " ".join(str(e) for e in read_entries(engine, reader))
    assert "SECRET-TOKEN" not in every


def test_only_admins_read_the_trail_and_only_their_org(engine):
    acme, _ = make_org(engine, "acme")
    globex, _ = make_org(engine, "globex")
    set_budget(engine, admin_scope(acme), 10)
    set_budget(engine, admin_scope(globex), 20)
    for role in (Role.DEVELOPER, Role.VIEWER, Role.BILLING):
        with pytest.raises(PermissionDenied):
            read_entries(engine, admin_scope(acme, role))
    [entry] = read_entries(engine, admin_scope(acme))
    assert entry["after"] == {"monthly_usd": 10.0}


def test_filters_by_action_actor_and_dates_and_csv(engine):
    org_id, _ = make_org(engine, "acme")
    scope = admin_scope(org_id)
    with engine.begin() as conn:
        for day, actor, action in [
            (1, "ann", "budget.set"),
            (2, "bob", "budget.set"),
            (3, "ann", "key.create"),
        ]:
            at = datetime(2026, 11, day, 12, tzinfo=UTC)
            audit.record(
                conn,
                org_id=org_id,
                actor=actor,
                action=action,
                target="t",
                at=at,
                address="10.0.0.9",
                after={"n": day},
            )

    def days(**kw):
        return [e["after"]["n"] for e in read_entries(engine, scope, AuditFilter(**kw))]

    assert days() == [3, 2, 1]
    assert days(actor="ann") == [3, 1]
    assert days(action="budget.set") == [2, 1]
    assert days(start=date(2026, 11, 2), end=date(2026, 11, 2)) == [2]
    assert days(start=date(2026, 11, 2)) == [3, 2]
    with pytest.raises(UserError, match="swap the dates"):
        days(start=date(2026, 11, 3), end=date(2026, 11, 1))
    with pytest.raises(UserError, match="Unknown audit action"):
        days(action="drop.table")
    rows = list(csv.DictReader(io.StringIO(audit.to_csv(read_entries(engine, scope)).decode())))
    assert [(r["actor"], r["action"], r["after"], r["address"]) for r in rows] == [
        ("ann", "key.create", '{"n": 3}', "10.0.0.9"),
        ("bob", "budget.set", '{"n": 2}', "10.0.0.9"),
        ("ann", "budget.set", '{"n": 1}', "10.0.0.9"),
    ]
    assert rows[0]["time_utc"] == "2026-11-03T12:00:00+00:00"
    # days of the reader's calendar: noon UTC is 2 am the next day in Kiritimati (+14)
    kiritimati = Zone("Pacific/Kiritimati")
    assert days(start=date(2026, 11, 2), end=date(2026, 11, 2), zone=kiritimati) == [1]
    assert days(start=date(2026, 11, 4), zone=kiritimati) == [3]
    local = audit.to_csv(read_entries(engine, scope), Zone("Asia/Kathmandu")).decode()
    rows = list(csv.DictReader(io.StringIO(local)))
    assert (rows[0]["time_utc"], rows[0]["time_local"]) == (
        "2026-11-03T12:00:00+00:00",
        "2026-11-03T17:45:00+05:45",
    )


def test_retention_purge_drops_only_old_entries(engine):
    from observatory_core.exports.housekeeping import maintenance
    from observatory_core.exports.worker import WorkerConfig

    org_id, _ = make_org(engine, "acme")
    now = datetime(2026, 11, 20, tzinfo=UTC)
    with engine.begin() as conn:
        for age in (400, 366, 364, 1):
            audit.record(
                conn,
                org_id=org_id,
                actor="a",
                action="budget.set",
                at=now - timedelta(days=age),
                after={"age": age},
            )
    config = WorkerConfig(export_dir=Path("/nonexistent"), audit_retention=timedelta(days=365))
    assert maintenance(engine, config, now=now)["audit_deleted"] == 2
    ages = [e["after"]["age"] for e in read_entries(engine, admin_scope(org_id))]
    assert ages == [1, 364]
    with engine.begin() as conn:
        assert audit.purge(conn, timedelta(days=30), now) == 1


def test_no_code_changes_or_deletes_audit_entries_but_the_purge():
    """Append-only by construction: the only UPDATE/DELETE of audit_log is audit.purge."""
    writers = []
    for path in (ROOT / "observatory_core").rglob("*.py"):
        text = path.read_text()
        if (
            re.search(r"(update|delete)\(\s*audit_log", text)
            or "audit_log.update" in text
            or "audit_log.delete" in text
        ):
            writers.append(path.relative_to(ROOT).as_posix())
    assert writers == ["observatory_core/accounts/audit.py"]
    source = (ROOT / "observatory_core" / "accounts/audit.py").read_text()
    assert source.count("delete(audit_log") == 1 and "update(audit_log" not in source
    with pytest.raises(AttributeError):
        audit.update  # noqa: B018 - no such function exists


def test_entries_land_in_the_database_with_the_request_address(engine):
    org_id, _ = make_org(engine, "acme")
    token = audit.client_address.set("192.0.2.7")
    try:
        set_budget(engine, admin_scope(org_id), 5)
    finally:
        audit.client_address.reset(token)
    with engine.connect() as conn:
        assert conn.execute(select(audit_log.c.address)).scalar_one() == "192.0.2.7"
