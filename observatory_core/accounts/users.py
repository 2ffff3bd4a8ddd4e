"""Users, passwords and the scope built at login.

Passwords are bcrypt hashes; the plain text exists only long enough to be printed once.
"""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime

import bcrypt
from sqlalchemy import func, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from observatory_core.accounts import audit, authversion, sessions, throttle
from observatory_core.accounts.permissions import Permission, Role, parse_role
from observatory_core.accounts.scope import Scope
from observatory_core.accounts.tenancy import org_id_by_slug
from observatory_core.base.errors import UserError
from observatory_core.storage.schema import orgs, user_projects, users

_USERNAME = re.compile(r"^[a-z0-9][a-z0-9._-]{1,63}$")
MIN_PASSWORD = 10


def hash_password(password: str) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt()).decode()


def verify_password(password: str, hashed: str) -> bool:
    return bcrypt.checkpw(password.encode(), hashed.encode())


def generate_password() -> str:
    return secrets.token_urlsafe(12)


def _check(username: str, password: str) -> None:
    if not _USERNAME.match(username):
        raise UserError(
            f"Username {username!r} is not valid; use 2-64 lowercase letters, digits, '.', '_' or '-'."
        )
    if len(password) < MIN_PASSWORD:
        raise UserError(f"The password is too short; use at least {MIN_PASSWORD} characters.")


def add_user(
    engine: Engine,
    org_slug: str,
    username: str,
    role: str | Role,
    *,
    name: str | None = None,
    email: str | None = None,
    password: str | None = None,
    actor: str = "cli",
) -> str:
    """Create a user and return the password (generated when none is given)."""
    role = parse_role(role) if isinstance(role, str) else role
    password = password or generate_password()
    _check(username, password)
    with engine.begin() as conn:
        org_id = org_id_by_slug(conn, org_slug)
        try:
            user_id = conn.execute(
                users.insert().values(
                    org_id=org_id,
                    username=username,
                    name=name or username,
                    email=email or f"{username}@{org_slug}.example",
                    password_hash=hash_password(password),
                    role=role.value,
                )
            ).inserted_primary_key[0]
        except IntegrityError:
            raise UserError(f"User {username!r} exists already; pick another username.") from None
        audit.record(
            conn,
            org_id=org_id,
            actor=actor,
            action="user.create",
            target=username,
            after={"role": role.value, "disabled": False},
            user_id=user_id,
        )
    return password


def _user_row(conn, username: str, org_id: int | None = None):
    """The user's row; with `org_id`, only a user of that org (an admin's own org)."""
    row = conn.execute(select(users).where(users.c.username == username)).mappings().first()
    if row is not None and org_id is not None and row["org_id"] != org_id:
        raise UserError(f"No user {username!r} in your org.")
    if row is None:
        raise UserError(
            f"No user {username!r}; list users with `python -m observatory_core user list`."
        )
    return row


def set_password(
    engine: Engine,
    username: str,
    password: str | None = None,
    *,
    actor: str = "cli",
    org_id: int | None = None,
) -> str:
    """Set a new password; the user's open sessions end, since the old one may be known."""
    password = password or generate_password()
    _check(username, password)
    now = datetime.now(UTC)
    with engine.begin() as conn:
        row = _user_row(conn, username, org_id)
        conn.execute(
            update(users)
            .where(users.c.id == row["id"])
            .values(password_hash=hash_password(password))
        )
        ended = sessions.end_all(conn, row["id"], "password", now)
        audit.record(
            conn,
            org_id=row["org_id"],
            actor=actor,
            action="user.password",
            target=username,
            sessions_ended=ended,
        )
    return password


def set_role(
    engine: Engine,
    username: str,
    role: str | Role,
    *,
    actor: str = "cli",
    org_id: int | None = None,
) -> None:
    """Give a user another role; every page run and download checks the role anew, so it
    applies on the user's next request in every server process."""
    role = parse_role(role) if isinstance(role, str) else role
    with engine.begin() as conn:
        row = _user_row(conn, username, org_id)
        if row["role"] == role.value:
            return
        conn.execute(update(users).where(users.c.id == row["id"]).values(role=role.value))
        authversion.bump(conn, row["org_id"])
        audit.record(
            conn,
            org_id=row["org_id"],
            actor=actor,
            action="user.role",
            target=username,
            before={"role": row["role"]},
            after={"role": role.value},
        )


def set_disabled(
    engine: Engine,
    username: str,
    disabled: bool,
    *,
    actor: str = "cli",
    org_id: int | None = None,
) -> None:
    """Disable (or enable) a user; disabling ends their sessions at once."""
    now = datetime.now(UTC)
    with engine.begin() as conn:
        row = _user_row(conn, username, org_id)
        if bool(row["disabled"]) == disabled:
            return
        conn.execute(update(users).where(users.c.id == row["id"]).values(disabled=disabled))
        ended = sessions.end_all(conn, row["id"], "disabled", now) if disabled else 0
        authversion.bump(conn, row["org_id"])
        audit.record(
            conn,
            org_id=row["org_id"],
            actor=actor,
            action="user.disable" if disabled else "user.enable",
            target=username,
            before={"disabled": bool(row["disabled"])},
            after={"disabled": disabled},
            sessions_ended=ended,
        )


def unlock(engine: Engine, username: str, *, actor: str = "cli") -> bool:
    """Lift a log-in lock on a username (its failure count starts over)."""
    with engine.begin() as conn:
        row = conn.execute(select(users.c.org_id).where(users.c.username == username)).first()
        lifted = throttle.clear(conn, throttle.USER, username) > 0
        if row is not None:
            audit.record(
                conn, org_id=row.org_id, actor=actor, action="user.unlock", target=username
            )
    return lifted


def count_users(engine: Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(users)).scalar_one()


def list_users(engine: Engine) -> list[dict]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(
                users.c.username, users.c.name, users.c.role, users.c.org_id, users.c.disabled
            ).order_by(users.c.org_id, users.c.username)
        )
        return [dict(r._mapping) for r in rows]


def scope_for(engine: Engine, username: str) -> Scope:
    """The scope of a logged-in user: their org, role and visible projects."""
    with engine.connect() as conn:
        row = (
            conn.execute(
                select(users).where(users.c.username == username, users.c.disabled.is_(False))
            )
            .mappings()
            .first()
        )
        if row is None:
            raise UserError(f"User {username!r} is unknown or disabled; ask an admin.")
        projects = (
            conn.execute(
                select(user_projects.c.project_id).where(user_projects.c.user_id == row["id"])
            )
            .scalars()
            .all()
        )
    return Scope(
        org_id=row["org_id"],
        role=Role(row["role"]),
        username=row["username"],
        user_id=row["id"],
        project_ids=frozenset(projects) if projects else None,
    )


# ---- what an org's admins do on the Admin page: their own org only, never to themselves ----


def org_users(engine: Engine, scope: Scope) -> list[dict]:
    scope.require(Permission.ADMIN)
    u = users.c
    with engine.connect() as conn:
        rows = conn.execute(
            select(u.username, u.name, u.email, u.role, u.disabled)
            .where(u.org_id == scope.org_id)
            .order_by(u.username)
        )
        return [dict(r._mapping) for r in rows]


def _not_self(scope: Scope, username: str, what: str) -> None:
    if username == scope.username:
        raise UserError(f"You cannot {what} yourself; ask another admin of your org.")


def admin_add_user(engine: Engine, scope: Scope, username: str, role: str) -> str:
    """Add a user to the admin's org; the generated password is returned (shown once)."""
    scope.require(Permission.ADMIN)
    with engine.connect() as conn:
        slug = conn.execute(select(orgs.c.slug).where(orgs.c.id == scope.org_id)).scalar_one()
    return add_user(engine, slug, (username or "").strip(), role, actor=scope.username)


def admin_set_role(engine: Engine, scope: Scope, username: str, role: str) -> None:
    scope.require(Permission.ADMIN)
    _not_self(scope, username, "change the role of")
    set_role(engine, username, role, actor=scope.username, org_id=scope.org_id)


def admin_set_disabled(engine: Engine, scope: Scope, username: str, disabled: bool) -> None:
    scope.require(Permission.ADMIN)
    _not_self(scope, username, "disable or enable")
    set_disabled(engine, username, disabled, actor=scope.username, org_id=scope.org_id)


def admin_reset_password(engine: Engine, scope: Scope, username: str) -> str:
    """A new random password (shown once); the user's sessions end."""
    scope.require(Permission.ADMIN)
    return set_password(engine, username, actor=scope.username, org_id=scope.org_id)
