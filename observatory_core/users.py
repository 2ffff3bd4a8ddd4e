"""Users, passwords and the scope built at login.

Passwords are bcrypt hashes; the plain text exists only long enough to be printed once.
"""

from __future__ import annotations

import re
import secrets

import bcrypt
from sqlalchemy import func, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from observatory_core.errors import UserError
from observatory_core.permissions import Role, parse_role
from observatory_core.scope import Scope
from observatory_core.storage.schema import user_projects, users
from observatory_core.tenancy import org_id_by_slug

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
) -> str:
    """Create a user and return the password (generated when none is given)."""
    role = parse_role(role) if isinstance(role, str) else role
    password = password or generate_password()
    _check(username, password)
    with engine.begin() as conn:
        org_id = org_id_by_slug(conn, org_slug)
        try:
            conn.execute(
                users.insert().values(
                    org_id=org_id,
                    username=username,
                    name=name or username,
                    email=email or f"{username}@{org_slug}.example",
                    password_hash=hash_password(password),
                    role=role.value,
                )
            )
        except IntegrityError:
            raise UserError(f"User {username!r} exists already; pick another username.") from None
    return password


def set_password(engine: Engine, username: str, password: str | None = None) -> str:
    password = password or generate_password()
    _check(username, password)
    with engine.begin() as conn:
        done = conn.execute(
            update(users)
            .where(users.c.username == username)
            .values(password_hash=hash_password(password))
        ).rowcount
    if not done:
        raise UserError(
            f"No user {username!r}; list users with `python -m observatory_core user list`."
        )
    return password


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


def authenticator_credentials(engine: Engine) -> dict:
    """The credentials dict streamlit-authenticator expects, with bcrypt hashes as stored."""
    with engine.connect() as conn:
        rows = conn.execute(select(users).where(users.c.disabled.is_(False))).mappings().all()
    return {
        "usernames": {
            r["username"]: {
                "email": r["email"],
                "first_name": r["name"],
                "last_name": "",
                "password": r["password_hash"],
                "roles": [r["role"]],
            }
            for r in rows
        }
    }


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
