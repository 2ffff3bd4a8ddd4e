"""Orgs and projects: created by the CLI, the demo loader and (later) the admin page."""

from __future__ import annotations

import re

from sqlalchemy import select
from sqlalchemy.engine import Connection

from observatory_core.base.errors import UserError
from observatory_core.storage.schema import orgs, projects

_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


def check_slug(kind: str, slug: str) -> str:
    if not _SLUG.match(slug):
        raise UserError(
            f"{kind} {slug!r} is not a valid slug; use lowercase letters, digits and dashes."
        )
    return slug


def ensure_org(conn: Connection, slug: str, name: str) -> int:
    """The org's id, creating it if needed (idempotent)."""
    check_slug("Org", slug)
    found = conn.execute(select(orgs.c.id).where(orgs.c.slug == slug)).scalar()
    if found is not None:
        return found
    return conn.execute(orgs.insert().values(slug=slug, name=name)).inserted_primary_key[0]


def ensure_project(conn: Connection, org_id: int, slug: str, name: str) -> int:
    check_slug("Project", slug)
    found = conn.execute(
        select(projects.c.id).where(projects.c.org_id == org_id, projects.c.slug == slug)
    ).scalar()
    if found is not None:
        return found
    result = conn.execute(projects.insert().values(org_id=org_id, slug=slug, name=name))
    return result.inserted_primary_key[0]


def org_id_by_slug(conn: Connection, slug: str) -> int:
    found = conn.execute(select(orgs.c.id).where(orgs.c.slug == slug)).scalar()
    if found is None:
        known = ", ".join(conn.execute(select(orgs.c.slug).order_by(orgs.c.slug)).scalars())
        raise UserError(f"No org {slug!r}; known orgs: {known or 'none yet'}.")
    return found
