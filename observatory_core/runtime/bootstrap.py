"""First-run set-up: schema, login secret, demo data and the first admin.

Safe to run on every start: each step only does what is missing.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from observatory_core.accounts.tenancy import ensure_org
from observatory_core.accounts.users import add_user, count_users
from observatory_core.base import settings
from observatory_core.storage.clickhouse.current import span_store
from observatory_core.storage.clickhouse.writes import written_extent
from observatory_core.storage.schema import orgs, spans


@dataclass(frozen=True)
class FirstAdmin:
    username: str
    password: str
    org_slug: str


def ensure_secrets_file(path: Path | None = None) -> bool:
    """Write a random login-cookie key if no secrets file exists; True when one was created."""
    path = path or settings.SECRETS_FILE
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "# Created by `python -m observatory_core bootstrap`; keep it out of version control.\n"
        f'cookie_key = "{secrets.token_urlsafe(32)}"\n'
    )
    path.chmod(0o600)
    return True


def span_count(engine: Engine) -> int:
    """The spans stored, where ingest writes them (the span store when one is set)."""
    if (store := span_store()) is not None:
        return written_extent(store)[0]
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(spans)).scalar_one()


def demo_gap(engine: Engine, now: datetime) -> timedelta | None:
    """How far the newest span lags behind now, when there is data and it lags over an hour."""
    if (store := span_store()) is not None:
        newest = written_extent(store)[1]
    else:
        with engine.connect() as conn:
            newest = conn.execute(select(func.max(spans.c.start_time))).scalar()
    if newest is None or now - newest < timedelta(hours=1):
        return None
    return now - newest


def first_org_slug(engine: Engine) -> str:
    with engine.begin() as conn:
        slug = conn.execute(select(orgs.c.slug).order_by(orgs.c.id).limit(1)).scalar()
        if slug is None:
            ensure_org(conn, "default", "Default org")
            slug = "default"
    return slug


def ensure_first_admin(engine: Engine) -> FirstAdmin | None:
    """Create `admin` with a random password when there are no users at all."""
    if count_users(engine):
        return None
    org = first_org_slug(engine)
    password = add_user(engine, org, "admin", "admin", name="Administrator")
    return FirstAdmin("admin", password, org)
