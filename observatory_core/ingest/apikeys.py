"""API keys per org (optionally one project): shown once at creation, stored as a hash.

The key carries its org; a program presenting it needs no user, and a revoked key stops
working on the next request in every process: the OTLP receiver looks the hash up on every
request (one index probe), and the HTTP API, which remembers verified keys, compares the org's
auth version (observatory_core/accounts/authversion.py) on every request.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.engine import Engine

from observatory_core.accounts import audit, authversion
from observatory_core.accounts.permissions import Permission, Role, parse_role
from observatory_core.accounts.scope import Scope
from observatory_core.base.errors import UserError
from observatory_core.storage.schema import api_keys, orgs, projects

KEY_PREFIX = "obs_"
SCOPES = ("ingest", "read")
# last_used_at is written at most this often per key, so busy exporters do not contend on it.
TOUCH_EVERY = timedelta(seconds=60)


class BadKey(Exception):
    """No key, an unknown key or a revoked key: the message says which, not whose."""


@dataclass(frozen=True)
class KeyInfo:
    id: int
    org_id: int
    project_id: int | None
    scopes: frozenset[str]
    role: Role = Role.DEVELOPER
    prefix: str = ""
    auth_version: int = 0  # the org's auth version when the key was read with it

    def scope(self) -> Scope:
        """Who a read key acts as: its role in its org, limited to its project if it has one."""
        projects = None if self.project_id is None else frozenset({self.project_id})
        return Scope(self.org_id, self.role, username=f"key:{self.prefix}", project_ids=projects)


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _check_scopes(scopes: list[str] | tuple[str, ...]) -> str:
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown or not scopes:
        raise UserError(f"Key scopes must be some of {', '.join(SCOPES)}; got {list(scopes)}.")
    return ",".join(s for s in SCOPES if s in scopes)


def create_key(
    engine: Engine,
    scope: Scope,
    name: str,
    *,
    project_id: int | None = None,
    scopes: tuple[str, ...] = ("ingest",),
    role: str | Role = Role.DEVELOPER,
) -> str:
    """Create a key and return it; this is the only time the plain key exists."""
    scope.require(Permission.ADMIN)
    name = (name or "").strip()
    if not 1 <= len(name) <= 100:
        raise UserError("Give the key a name of 1 to 100 characters, e.g. 'checkout-service prod'.")
    scope_text = _check_scopes(scopes)
    role = parse_role(role) if isinstance(role, str) else role
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    with engine.begin() as conn:
        if project_id is not None:
            owner = conn.execute(
                select(projects.c.org_id).where(projects.c.id == project_id)
            ).scalar()
            if owner != scope.org_id:
                raise UserError(f"No project {project_id} in your org; pick one from the list.")
        key_id = conn.execute(
            api_keys.insert().values(
                org_id=scope.org_id,
                project_id=project_id,
                name=name,
                prefix=key[:12],
                key_hash=_hash(key),
                scopes=scope_text,
                role=role.value,
                created_by=scope.username,
                created_at=datetime.now(UTC),
            )
        ).inserted_primary_key[0]
        audit.record_for(
            conn,
            scope,
            "key.create",
            key_id,
            after={
                "name": name,
                "prefix": key[:12],
                "scopes": scope_text,
                "role": role.value,
                "project_id": project_id,
            },
        )
    return key


def list_keys(engine: Engine, scope: Scope) -> list[dict]:
    """The org's keys, newest first, without anything that would let one be used."""
    scope.require(Permission.ADMIN)
    k = api_keys.c
    query = (
        select(
            k.id,
            k.name,
            k.prefix,
            projects.c.slug.label("project"),
            k.scopes,
            k.role,
            k.created_by,
            k.created_at,
            k.last_used_at,
            k.revoked_at,
        )
        .select_from(api_keys.outerjoin(projects, projects.c.id == k.project_id))
        .where(k.org_id == scope.org_id)
        .order_by(k.id.desc())
    )
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(query)]


def key_scope(engine: Engine, org_id: int, name: str) -> Scope | None:
    """The scope of a live read key by the name its scope carries ("key:<prefix>"), for work
    it set up that runs later (a repeating export); None once it is revoked."""
    k = api_keys.c
    with engine.connect() as conn:
        row = conn.execute(
            select(k.org_id, k.project_id, k.scopes, k.role, k.prefix).where(
                k.org_id == org_id,
                k.prefix == name.removeprefix("key:"),
                k.revoked_at.is_(None),
            )
        ).first()
    if row is None or "read" not in row.scopes.split(","):
        return None
    info = KeyInfo(0, row.org_id, row.project_id, frozenset(), parse_role(row.role), row.prefix)
    return info.scope()


def revoke_key(engine: Engine, scope: Scope, key_id: int) -> None:
    """Revoke a key; with the org's auth version bumped in the same transaction, every
    server process refuses it from its next request on."""
    scope.require(Permission.ADMIN)
    now = datetime.now(UTC)
    with engine.begin() as conn:
        row = conn.execute(
            update(api_keys)
            .where(api_keys.c.id == key_id, api_keys.c.org_id == scope.org_id)
            .where(api_keys.c.revoked_at.is_(None))
            .values(revoked_at=now)
            .returning(api_keys.c.name, api_keys.c.prefix)
        ).first()
        if row is not None:
            authversion.bump(conn, scope.org_id)
            audit.record_for(
                conn,
                scope,
                "key.revoke",
                key_id,
                before={"revoked_at": None},
                after={"revoked_at": now},
                name=row.name,
                prefix=row.prefix,
            )
    if row is None:
        raise UserError(f"No active key {key_id} in your org; it may already be revoked.")


def key_from_headers(headers) -> str | None:
    """`Authorization: Bearer KEY` (what OTLP exporters are configured with) or `x-api-key`."""
    auth = headers.get("authorization") or ""
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip() or None
    return (headers.get("x-api-key") or "").strip() or None


def verify_key(
    engine: Engine, key: str | None, needed: str, now: datetime | None = None
) -> KeyInfo:
    """The key's org, project and scopes, or `BadKey` with a message safe to show anyone."""
    if not key:
        raise BadKey(
            "No API key: send 'Authorization: Bearer <key>' (create a key on the Admin page)."
        )
    if not key.startswith(KEY_PREFIX) or len(key) > 100:
        raise BadKey("That is not an LLM Observatory API key; keys start with 'obs_'.")
    now = now or datetime.now(UTC)
    k = api_keys.c
    with engine.connect() as conn:
        row = conn.execute(
            select(
                k.id,
                k.org_id,
                k.project_id,
                k.scopes,
                k.role,
                k.prefix,
                k.revoked_at,
                k.last_used_at,
                orgs.c.auth_version,
            )
            .select_from(api_keys.join(orgs, orgs.c.id == k.org_id))
            .where(k.key_hash == _hash(key))
        ).first()
    if row is None:
        raise BadKey("Unknown API key; check for a copy-paste slip or create a new key.")
    if row.revoked_at is not None:
        raise BadKey("This API key was revoked; ask an admin of your org for a new one.")
    scopes = frozenset(row.scopes.split(","))
    if needed not in scopes:
        raise BadKey(f"This API key lacks the '{needed}' scope; create a key that has it.")
    if row.last_used_at is None or now - row.last_used_at >= TOUCH_EVERY:
        with engine.begin() as conn:
            conn.execute(update(api_keys).where(k.id == row.id).values(last_used_at=now))
    return KeyInfo(
        row.id, row.org_id, row.project_id, scopes, Role(row.role), row.prefix, row.auth_version
    )
