"""API keys: shown once, stored as a hash, listed without secrets, revocable, org-bound."""

from __future__ import annotations

import hashlib

import pytest
from sqlalchemy import select

from observatory_core.accounts.permissions import Role
from observatory_core.base.errors import PermissionDenied, UserError
from observatory_core.ingest.apikeys import BadKey, create_key, list_keys, revoke_key, verify_key
from observatory_core.storage.schema import api_keys
from tests.helpers import admin_scope, make_org


def test_the_key_is_only_stored_as_a_hash(engine):
    org_id, _ = make_org(engine, "acme")
    key = create_key(engine, admin_scope(org_id), "exporter", scopes=("ingest", "read"))
    with engine.connect() as conn:
        stored = [dict(r._mapping) for r in conn.execute(select(api_keys))]
    assert len(stored) == 1 and key not in repr(stored)
    assert stored[0]["key_hash"] == hashlib.sha256(key.encode()).hexdigest()
    (listed,) = list_keys(engine, admin_scope(org_id))
    assert "key_hash" not in listed and listed["prefix"] == key[:12]
    assert listed["scopes"] == "ingest,read" and listed["last_used_at"] is None
    info = verify_key(engine, key, "read")
    assert (info.org_id, info.project_id) == (org_id, None)
    assert list_keys(engine, admin_scope(org_id))[0]["last_used_at"] is not None


def test_only_admins_manage_keys_and_only_their_orgs(engine):
    acme, _ = make_org(engine, "acme")
    globex, _ = make_org(engine, "globex")
    key = create_key(engine, admin_scope(acme), "exporter")
    with pytest.raises(PermissionDenied):
        create_key(engine, admin_scope(acme, Role.DEVELOPER), "sneaky")
    with pytest.raises(PermissionDenied):
        list_keys(engine, admin_scope(acme, Role.VIEWER))
    (mine,) = list_keys(engine, admin_scope(acme))
    assert list_keys(engine, admin_scope(globex)) == []
    with pytest.raises(UserError, match="No active key"):
        revoke_key(engine, admin_scope(globex), mine["id"])
    assert verify_key(engine, key, "ingest").org_id == acme  # untouched by the other org


@pytest.mark.parametrize(
    ("name", "scopes", "message"),
    [
        ("", ("ingest",), "name of 1 to 100"),
        ("x" * 101, ("ingest",), "name of 1 to 100"),
        ("ok", ("write",), "scopes must be"),
        ("ok", (), "scopes must be"),
    ],
)
def test_bad_key_requests_say_what_to_fix(engine, name, scopes, message):
    org_id, _ = make_org(engine, "acme")
    with pytest.raises(UserError, match=message):
        create_key(engine, admin_scope(org_id), name, scopes=scopes)


def test_revoking_twice_says_so(engine):
    org_id, _ = make_org(engine, "acme")
    key = create_key(engine, admin_scope(org_id), "exporter")
    (listed,) = list_keys(engine, admin_scope(org_id))
    revoke_key(engine, admin_scope(org_id), listed["id"])
    with pytest.raises(UserError, match="already be revoked"):
        revoke_key(engine, admin_scope(org_id), listed["id"])
    with pytest.raises(BadKey, match="revoked"):
        verify_key(engine, key, "ingest")
