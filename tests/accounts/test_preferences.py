"""Each user's time zone: stored per user (migration 0018 on a populated database), checked
before it is stored, cleared back to the browser's, and never another user's or org's."""

from __future__ import annotations

import pytest
from alembic import command
from sqlalchemy import text

from observatory_core.accounts.preferences import set_user_zone, user_zone
from observatory_core.accounts.users import add_user, scope_for
from observatory_core.base.zones import ZoneError
from observatory_core.storage.engine import get_engine
from observatory_core.storage.migrate import alembic_config, upgrade
from tests.helpers import make_org
from tests.storage.test_packed_sketch import fresh_url  # noqa: F401 (a fixture)


def test_each_user_keeps_their_own_zone(engine):
    make_org(engine, "acme")
    make_org(engine, "globex")
    add_user(engine, "acme", "ann", "viewer", password="a-long-password")
    add_user(engine, "globex", "bob", "viewer", password="a-long-password")
    ann, bob = scope_for(engine, "ann"), scope_for(engine, "bob")
    assert user_zone(engine, ann) is None  # follows the browser until chosen
    assert set_user_zone(engine, ann, "Asia/Kathmandu").name == "Asia/Kathmandu"
    assert user_zone(engine, ann).name == "Asia/Kathmandu"
    assert user_zone(engine, bob) is None
    with pytest.raises(ZoneError, match="IANA name"):
        set_user_zone(engine, ann, "Mars/Olympus")
    assert user_zone(engine, ann).name == "Asia/Kathmandu"  # a refused name changes nothing
    set_user_zone(engine, ann, None)
    assert user_zone(engine, ann) is None


def test_migration_adds_the_column_to_a_populated_database(fresh_url):  # noqa: F811
    engine = get_engine(fresh_url)
    upgrade(engine)
    make_org(engine, "acme")
    add_user(engine, "acme", "ann", "viewer", password="a-long-password")
    set_user_zone(engine, scope_for(engine, "ann"), "America/New_York")
    with engine.begin() as conn:
        command.downgrade(alembic_config(engine, conn), "0014")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT username FROM users")).scalars().all() == ["ann"]
    upgrade(engine)
    ann = scope_for(engine, "ann")
    assert user_zone(engine, ann) is None  # the column came back empty: the browser's zone
    set_user_zone(engine, ann, "Asia/Kolkata")
    assert user_zone(engine, ann).name == "Asia/Kolkata"
