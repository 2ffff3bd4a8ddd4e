"""Failed attempts per username or client address: growing delays, then a temporary lock.

The first `free` failures in a row cost nothing; after the n-th failure beyond those the next
attempt is accepted only after min(2^(n-1), 30) seconds; at `lock_after` failures the subject
is locked for `lock_for`. A streak is forgotten
`lock_for` after its last failure or when its lock ends; a successful log-in clears its
username's streak (never an address's, so one good account cannot reset an attacker's count).
The counts live in the database, so they hold across server processes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, case, delete, or_, select, update
from sqlalchemy.engine import Connection

from observatory_core.storage.dialect import insert_ignoring_duplicates
from observatory_core.storage.schema import auth_throttle

MAX_DELAY_S = 30


@dataclass(frozen=True)
class Policy:
    kind: str  # user | address | key
    lock_after: int
    lock_for: timedelta
    free: int = 0

    def delay(self, failures: int) -> timedelta:
        beyond = failures - self.free
        return timedelta(seconds=min(2 ** (beyond - 1), MAX_DELAY_S) if beyond > 0 else 0)


# The numbers README.md states (section Security).
USER = Policy("user", lock_after=5, lock_for=timedelta(minutes=15))
ADDRESS = Policy("address", lock_after=20, lock_for=timedelta(minutes=15), free=5)
KEY = Policy("key", lock_after=20, lock_for=timedelta(minutes=5), free=5)  # bad API keys


@dataclass(frozen=True)
class Block:
    """Why and until when a subject may not try again."""

    policy: Policy
    until: datetime
    locked: bool  # a lock (True) or just the growing delay (False)

    def seconds(self, now: datetime) -> int:
        return max(1, math.ceil((self.until - now).total_seconds()))


def _key(policy: Policy, subject: str):
    t = auth_throttle.c
    return and_(t.kind == policy.kind, t.subject == subject[:200])


def blocked(conn: Connection, policy: Policy, subject: str | None, now: datetime) -> Block | None:
    """A Block when `subject` must wait (delay or lock), else None."""
    if not subject:
        return None
    t = auth_throttle.c
    row = conn.execute(
        select(t.failures, t.last_failure_at, t.locked_until).where(_key(policy, subject))
    ).first()
    if row is None:
        return None
    if row.locked_until is not None:
        return Block(policy, row.locked_until, True) if row.locked_until > now else None
    if row.last_failure_at <= now - policy.lock_for:
        return None
    until = row.last_failure_at + policy.delay(row.failures)
    return Block(policy, until, False) if until > now else None


def count(
    conn: Connection, policy: Policy, subject: str | None, now: datetime
) -> tuple[int, Block | None]:
    """Count a failure atomically (concurrent processes never lose one): the streak's length
    with it, and the block it leads to."""
    if not subject:
        return 0, None
    t = auth_throttle.c
    subject = subject[:200]
    conn.execute(
        insert_ignoring_duplicates(conn, auth_throttle).values(
            kind=policy.kind, subject=subject, failures=0, last_failure_at=now
        )
    )
    stale = or_(t.last_failure_at <= now - policy.lock_for, t.locked_until <= now)
    failures, locked_until = conn.execute(
        update(auth_throttle)
        .where(_key(policy, subject))
        .values(
            failures=case((stale, 1), else_=t.failures + 1),
            locked_until=case((stale, None), else_=t.locked_until),
            last_failure_at=now,
        )
        .returning(t.failures, t.locked_until)
    ).one()
    if locked_until is not None:  # locked already (by another process): the lock stands
        return failures, Block(policy, locked_until, True)
    if failures >= policy.lock_after:
        until = now + policy.lock_for
        conn.execute(update(auth_throttle).where(_key(policy, subject)).values(locked_until=until))
        return failures, Block(policy, until, True)
    wait = policy.delay(failures)
    return failures, (Block(policy, now + wait, False) if wait else None)


def fail(conn: Connection, policy: Policy, subject: str | None, now: datetime) -> Block | None:
    """Count a failure; the block it leads to."""
    return count(conn, policy, subject, now)[1]


def clear(conn: Connection, policy: Policy, subject: str) -> int:
    """Forget a subject's streak (a good log-in, or an admin unlocking a user)."""
    return conn.execute(delete(auth_throttle).where(_key(policy, subject))).rowcount


def purge(conn: Connection, now: datetime) -> int:
    """Drop streaks that no longer count (run by the worker's maintenance)."""
    t = auth_throttle.c
    longest = max(p.lock_for for p in (USER, ADDRESS, KEY))
    return conn.execute(
        delete(auth_throttle).where(
            t.last_failure_at < now - longest, or_(t.locked_until.is_(None), t.locked_until < now)
        )
    ).rowcount
