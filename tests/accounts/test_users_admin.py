"""What an org's admins may do to users: their own org only, never to themselves, audited."""

from __future__ import annotations

import pytest

from observatory_core.accounts.audit import AuditFilter, read_entries
from observatory_core.accounts.permissions import Role
from observatory_core.accounts.users import (
    admin_add_user,
    admin_reset_password,
    admin_set_disabled,
    admin_set_role,
    org_users,
    scope_for,
    verify_password,
)
from observatory_core.base.errors import PermissionDenied, UserError
from tests.helpers import admin_scope, make_org


def test_admins_manage_their_own_org_only(engine):
    acme, _ = make_org(engine, "acme")
    globex, _ = make_org(engine, "globex")
    boss = admin_scope(acme, username="boss")
    first = admin_add_user(engine, boss, "dana", "developer")
    admin_set_role(engine, boss, "dana", "billing")
    admin_set_disabled(engine, boss, "dana", True)
    new = admin_reset_password(engine, boss, "dana")
    assert new != first
    assert org_users(engine, boss) == [
        {
            "username": "dana",
            "name": "dana",
            "email": "dana@acme.example",
            "role": "billing",
            "disabled": True,
        }
    ]
    stranger = admin_scope(globex, username="other")
    for act in (
        lambda: admin_set_role(engine, stranger, "dana", "admin"),
        lambda: admin_set_disabled(engine, stranger, "dana", False),
        lambda: admin_reset_password(engine, stranger, "dana"),
    ):
        with pytest.raises(UserError, match="No user 'dana' in your org"):
            act()
    assert org_users(engine, stranger) == []
    actions = [e["action"] for e in read_entries(engine, boss, AuditFilter(actor="boss"))]
    assert actions == ["user.password", "user.disable", "user.role", "user.create"]


def test_admins_cannot_lock_themselves_out_and_others_cannot_manage(engine):
    make_org(engine, "acme")
    from observatory_core.accounts.users import add_user

    add_user(engine, "acme", "boss", "admin")
    boss = scope_for(engine, "boss")
    with pytest.raises(UserError, match="cannot change the role of yourself"):
        admin_set_role(engine, boss, "boss", "viewer")
    with pytest.raises(UserError, match="cannot disable or enable yourself"):
        admin_set_disabled(engine, boss, "boss", True)
    for role in (Role.DEVELOPER, Role.VIEWER, Role.BILLING):
        with pytest.raises(PermissionDenied):
            admin_add_user(engine, admin_scope(boss.org_id, role), "eve", "admin")
    password = admin_add_user(engine, boss, "eve", "viewer")
    from sqlalchemy import select

    from observatory_core.storage.schema import users

    with engine.connect() as conn:
        stored = conn.execute(
            select(users.c.password_hash).where(users.c.username == "eve")
        ).scalar()
    assert verify_password(password, stored)
