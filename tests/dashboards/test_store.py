"""Saved dashboards on both stores: kept per org, written only by developers and admins,
names unique in an org, duplicated under a free name, every write in the audit trail."""

from __future__ import annotations

from dataclasses import replace

import pytest
from sqlalchemy import select

from observatory_core.accounts.permissions import Role
from observatory_core.base.errors import PermissionDenied
from observatory_core.dashboards.model import DashboardError, from_dict
from observatory_core.dashboards.store import (
    copy_name,
    create_dashboard,
    delete_dashboard,
    duplicate_dashboard,
    free_name,
    get_dashboard,
    list_dashboards,
    update_dashboard,
)
from observatory_core.demo.load import ensure_demo_tenants
from observatory_core.demo.starter_dashboards import STARTER_DASHBOARDS, install_starter_dashboards
from observatory_core.exports.jobs import Conflict, NotFound
from observatory_core.storage.schema import audit_log, dashboards
from tests.helpers import admin_scope, make_org

COST, LATENCY = (from_dict(d) for d in STARTER_DASHBOARDS)


def test_crud_within_an_org(engine):
    acme, _ = make_org(engine, "acme")
    globex, _ = make_org(engine, "globex")
    dev = admin_scope(acme, Role.DEVELOPER, username="dana")
    made = create_dashboard(engine, dev, COST)
    assert made["dashboard"] == COST and made["created_by"] == "dana"
    assert made["created_at"].tzinfo is not None
    listed = list_dashboards(engine, admin_scope(acme, Role.VIEWER))
    assert [(d["name"], d["charts"]) for d in listed] == [("Cost by team", 6)]
    # another org neither lists nor reads nor writes it
    stranger = admin_scope(globex)
    assert list_dashboards(engine, stranger) == []
    for call in (
        lambda: get_dashboard(engine, stranger, made["id"]),
        lambda: update_dashboard(engine, stranger, made["id"], LATENCY),
        lambda: delete_dashboard(engine, stranger, made["id"]),
    ):
        with pytest.raises(NotFound):
            call()
    # the same name in the other org is fine; twice in one org is not
    create_dashboard(engine, stranger, COST)
    with pytest.raises(Conflict, match="already has a dashboard named 'Cost by team'"):
        create_dashboard(engine, dev, COST)
    changed = update_dashboard(engine, dev, made["id"], replace(LATENCY, name="SLOs"))
    assert changed["name"] == "SLOs" and changed["dashboard"].charts == LATENCY.charts
    other = create_dashboard(engine, dev, COST)
    with pytest.raises(Conflict):
        update_dashboard(engine, dev, other["id"], replace(COST, name="SLOs"))
    # duplicates take free names
    first = duplicate_dashboard(engine, dev, other["id"])
    second = duplicate_dashboard(engine, dev, other["id"])
    assert (first["name"], second["name"]) == ("Copy of Cost by team", "Copy of Cost by team (2)")
    assert second["dashboard"].charts == COST.charts
    gone = delete_dashboard(engine, dev, first["id"])
    assert gone["name"] == "Copy of Cost by team"
    with pytest.raises(NotFound):
        get_dashboard(engine, dev, first["id"])
    with engine.connect() as conn:
        actions = conn.execute(
            select(audit_log.c.action).where(audit_log.c.org_id == acme).order_by(audit_log.c.id)
        ).scalars()
        assert [a for a in actions if a.startswith("dashboard.")] == [
            "dashboard.create",
            "dashboard.update",
            "dashboard.create",
            "dashboard.create",
            "dashboard.create",
            "dashboard.delete",
        ]


@pytest.mark.parametrize("role", [Role.VIEWER, Role.BILLING])
def test_viewers_and_billing_read_but_do_not_write(engine, role):
    acme, _ = make_org(engine, "acme")
    made = create_dashboard(engine, admin_scope(acme), COST)
    reader = admin_scope(acme, role)
    assert get_dashboard(engine, reader, made["id"])["dashboard"] == COST
    for call in (
        lambda: create_dashboard(engine, reader, LATENCY),
        lambda: update_dashboard(engine, reader, made["id"], LATENCY),
        lambda: duplicate_dashboard(engine, reader, made["id"]),
        lambda: delete_dashboard(engine, reader, made["id"]),
    ):
        with pytest.raises(PermissionDenied, match="dashboards:manage"):
            call()


def test_starter_dashboards_install_once_per_demo_org(engine):
    ensure_demo_tenants(engine)
    assert install_starter_dashboards(engine) == 2 * len(STARTER_DASHBOARDS)
    assert install_starter_dashboards(engine) == 0


def test_copy_names_stay_within_the_limit():
    long = "x" * 100
    assert len(copy_name(long, set())) == 100 and free_name("a", {"a"}) == "a (2)"
    assert copy_name(long, {copy_name(long, set())}).endswith(" (2)")


def test_a_stored_definition_that_no_longer_reads_says_which_and_what(engine):
    acme, _ = make_org(engine, "acme")
    scope = admin_scope(acme)
    made = create_dashboard(engine, scope, COST)
    with engine.begin() as conn:  # as if a metric it names had been removed since
        text = conn.execute(select(dashboards.c.definition)).scalar_one()
        broken = text.replace("total_cost.avg", "total_cost_old.avg")
        conn.execute(dashboards.update().values(definition=broken))
    assert [d["charts"] for d in list_dashboards(engine, scope)] == [6]  # still listed
    with pytest.raises(DashboardError, match=r"Dashboard \d+ \(Cost by team\) no longer reads: "):
        get_dashboard(engine, scope, made["id"])
