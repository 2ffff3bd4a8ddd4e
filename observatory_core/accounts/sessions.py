"""Log-in sessions kept on the server, so a login cookie is only as good as its session.

The cookie (accounts/login_cookie.py) carries a random session id; only its SHA-256 is stored. Logging
out ends the session, as do disabling the user, changing their role or password (a fresh log-in
then shows the new rights) and idling past the limit (`OBSERVATORY_SESSION_IDLE_MINUTES`). An
ended session never comes back, whatever the browser still holds.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, or_, select, update
from sqlalchemy.engine import Connection, Engine

from observatory_core.storage.schema import user_sessions, users

# last_seen_at is written at most this often per session, so browsing costs no write per click.
TOUCH_EVERY = timedelta(seconds=60)


def _hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def start(conn: Connection, user_id: int, now: datetime, address: str | None = None) -> str:
    """A new session for `user_id`; the returned id exists only in the cookie."""
    session_id = secrets.token_urlsafe(32)
    conn.execute(
        user_sessions.insert().values(
            id_hash=_hash(session_id),
            user_id=user_id,
            created_at=now,
            last_seen_at=now,
            address=(address or None) and address[:64],
        )
    )
    return session_id


@dataclass(frozen=True)
class Resumed:
    """A session that is still valid (username set), or why it is not (reason set)."""

    username: str | None = None
    reason: str | None = None  # gone | logout | idle | disabled | password | role


def resume(
    engine: Engine, session_id: str | None, idle: timedelta, now: datetime | None = None
) -> Resumed:
    """Check a session on a request: ended, idle too long or its user disabled means no."""
    if not session_id:
        return Resumed(reason="gone")
    now = now or datetime.now(UTC)
    s = user_sessions.c
    with engine.connect() as conn:
        row = conn.execute(
            select(s.last_seen_at, s.ended_at, s.end_reason, users.c.username, users.c.disabled)
            .select_from(user_sessions.join(users, users.c.id == s.user_id))
            .where(s.id_hash == _hash(session_id))
        ).first()
    if row is None:
        return Resumed(reason="gone")
    if row.ended_at is not None:
        return Resumed(reason=row.end_reason or "logout")
    if row.disabled:
        return Resumed(reason="disabled")
    if now - row.last_seen_at > idle:
        end(engine, session_id, "idle", now)
        return Resumed(reason="idle")
    if now - row.last_seen_at >= TOUCH_EVERY:
        with engine.begin() as conn:
            conn.execute(
                update(user_sessions)
                .where(s.id_hash == _hash(session_id), s.ended_at.is_(None))
                .values(last_seen_at=now)
            )
    return Resumed(username=row.username)


def end(engine: Engine, session_id: str, reason: str, now: datetime | None = None) -> bool:
    """End one session (log out, idle); False when it had ended already."""
    s = user_sessions.c
    with engine.begin() as conn:
        return bool(
            conn.execute(
                update(user_sessions)
                .where(s.id_hash == _hash(session_id), s.ended_at.is_(None))
                .values(ended_at=now or datetime.now(UTC), end_reason=reason)
            ).rowcount
        )


def end_all(conn: Connection, user_id: int, reason: str, now: datetime) -> int:
    """End every open session of a user (disabled, new role, new password)."""
    s = user_sessions.c
    return conn.execute(
        update(user_sessions)
        .where(s.user_id == user_id, s.ended_at.is_(None))
        .values(ended_at=now, end_reason=reason)
    ).rowcount


def username_of(engine: Engine, session_id: str) -> str | None:
    """Whose session this is, ended or not (for the audit entry of a log-out)."""
    s = user_sessions.c
    with engine.connect() as conn:
        return conn.execute(
            select(users.c.username)
            .select_from(user_sessions.join(users, users.c.id == s.user_id))
            .where(s.id_hash == _hash(session_id))
        ).scalar()


KEEP_ENDED = timedelta(days=30)


def purge(conn: Connection, now: datetime) -> int:
    """Drop sessions ended or unused for 30 days (run by the worker's maintenance)."""
    s = user_sessions.c
    return conn.execute(
        delete(user_sessions).where(
            or_(s.ended_at < now - KEEP_ENDED, s.last_seen_at < now - KEEP_ENDED)
        )
    ).rowcount
