"""Users: hashed passwords, clear refusals, the scope built at login."""

import bcrypt
import pytest

from observatory_core.accounts.permissions import Role
from observatory_core.accounts.users import (
    add_user,
    hash_password,
    scope_for,
    set_password,
    verify_password,
)
from observatory_core.base.errors import UserError
from observatory_core.storage.schema import user_projects, users
from tests.conftest import PRODUCTION_GENSALT, TEST_BCRYPT_ROUNDS
from tests.helpers import authenticator_credentials, make_org


def test_added_user_logs_in_with_the_returned_password_only(engine):
    make_org(engine, "acme")
    password = add_user(engine, "acme", "dana", "developer")
    creds = authenticator_credentials(engine)["usernames"]["dana"]
    assert creds["password"].startswith("$2") and password not in creds["password"]
    assert verify_password(password, creds["password"])
    assert not verify_password(password + "x", creds["password"])
    assert creds["roles"] == ["developer"]


def test_the_app_hashes_at_bcrypts_default_cost(monkeypatch):
    """The suite hashes at cost 4 to save time (tests/conftest.py); the app itself at 12."""
    assert bcrypt.gensalt().startswith(f"$2b${TEST_BCRYPT_ROUNDS:02d}$".encode())
    monkeypatch.setattr(bcrypt, "gensalt", PRODUCTION_GENSALT)
    hashed = hash_password("correct-horse-battery")
    assert hashed.startswith("$2b$12$")
    assert verify_password("correct-horse-battery", hashed)
    assert not verify_password("correct-horse-battery!", hashed)


def test_generated_passwords_differ(engine):
    make_org(engine, "acme")
    assert add_user(engine, "acme", "u1", "viewer") != add_user(engine, "acme", "u2", "viewer")


@pytest.mark.parametrize(
    ("username", "org", "role", "password", "needle"),
    [
        ("Bad Name", "acme", "viewer", None, "not valid"),
        ("dana", "nope", "viewer", None, "No org 'nope'"),
        ("dana", "acme", "owner", None, "Unknown role"),
        ("dana", "acme", "viewer", "short", "too short"),
    ],
)
def test_bad_user_input_is_refused_with_the_fix(engine, username, org, role, password, needle):
    make_org(engine, "acme")
    with pytest.raises(UserError, match=needle):
        add_user(engine, org, username, role, password=password)


def test_duplicate_username_is_refused(engine):
    make_org(engine, "acme")
    add_user(engine, "acme", "dana", "viewer")
    with pytest.raises(UserError, match="exists already"):
        add_user(engine, "acme", "dana", "admin")


def test_scope_carries_org_role_and_project_limits(engine):
    org, (p1, p2) = make_org(engine, "acme", projects=("a", "b"))
    add_user(engine, "acme", "dana", "billing")
    scope = scope_for(engine, "dana")
    assert (scope.org_id, scope.role, scope.project_ids) == (org, Role.BILLING, None)
    with engine.begin() as conn:
        uid = conn.execute(users.select().where(users.c.username == "dana")).first().id
        conn.execute(user_projects.insert().values(user_id=uid, project_id=p2))
    assert scope_for(engine, "dana").project_ids == frozenset({p2})


def test_password_change_and_unknown_user(engine):
    make_org(engine, "acme")
    add_user(engine, "acme", "dana", "viewer")
    new = set_password(engine, "dana", "a-new-password-1")
    assert verify_password(new, authenticator_credentials(engine)["usernames"]["dana"]["password"])
    with pytest.raises(UserError, match="No user 'ghost'"):
        set_password(engine, "ghost")
    with pytest.raises(UserError, match="unknown or disabled"):
        scope_for(engine, "ghost")
