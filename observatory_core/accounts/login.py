"""Log-in by password: throttled per username and per client address, audited, and never
saying whether a username exists (unknown, disabled and wrong-password attempts read alike and
cost the same bcrypt check)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.engine import Engine

from observatory_core.accounts import audit, sessions, throttle
from observatory_core.accounts.users import hash_password, verify_password
from observatory_core.storage.schema import users

WRONG_LOGIN = (
    "Wrong username or password. Try again, or ask an admin to reset it with "
    "`python -m observatory_core user passwd NAME`."
)
# Checked against when the username is unknown, so that answer takes as long as a wrong password.
_DUMMY_HASH = hash_password("not-a-real-password-0")


@dataclass(frozen=True)
class LoginResult:
    ok: bool
    message: str = ""
    username: str | None = None
    session_id: str | None = None


def blocked_message(block: throttle.Block, now: datetime) -> str:
    """Plain words: locked or wait, for how long, and who can lift it."""
    who = "this username" if block.policy is throttle.USER else "your address"
    seconds = block.seconds(now)
    if not block.locked:
        return f"Too many failed log-ins for {who}; wait {seconds} s and try again."
    minutes = max(1, round(seconds / 60))
    until = block.until.astimezone(UTC).strftime("%H:%M UTC")
    lift = (
        " An admin can lift it with `python -m observatory_core user unlock NAME`."
        if block.policy is throttle.USER
        else ""
    )
    return (
        f"Log-in is locked for {who} after {block.policy.lock_after} failed attempts: "
        f"try again in {minutes} minute{'s' if minutes != 1 else ''} (at {until}).{lift}"
    )


def log_in(
    engine: Engine,
    username: str,
    password: str,
    address: str | None = None,
    now: datetime | None = None,
) -> LoginResult:
    """Check a password and open a session; every attempt, refused or not, is audited."""
    now = now or datetime.now(UTC)
    name = (username or "").strip().lower()[:64]
    with engine.begin() as conn:
        row = (
            conn.execute(
                select(users.c.id, users.c.org_id, users.c.password_hash, users.c.disabled).where(
                    users.c.username == name
                )
            ).first()
            if name
            else None
        )
        org_id = row.org_id if row else None

        def failed(conn, reason: str) -> None:
            audit.record(
                conn,
                org_id=org_id,
                actor=name or "(empty)",
                action="login.failed",
                target=name,
                address=address,
                at=now,
                reason=reason,
            )

        block = throttle.blocked(conn, throttle.USER, name, now) or throttle.blocked(
            conn, throttle.ADDRESS, address, now
        )
        if block is not None:
            reason = "locked" if block.locked else "too soon after a failure"
            failed(conn, reason)
            return LoginResult(False, blocked_message(block, now))
        # Counted before the password is checked and committed at once, so attempts racing
        # past the check above (in parallel, from several processes) still get only
        # `lock_after` checks of a password; a success clears the count below.
        attempt, user_block = throttle.count(conn, throttle.USER, name, now)
        if attempt > throttle.USER.lock_after and user_block is not None:
            failed(conn, "locked")
            return LoginResult(False, blocked_message(user_block, now))
    good = verify_password(password or "", row.password_hash if row else _DUMMY_HASH)
    with engine.begin() as conn:
        if row is None or row.disabled or not good:
            reason = (
                "unknown user" if row is None else "disabled" if row.disabled else "wrong password"
            )
            failed(conn, reason)
            blocks = [user_block, throttle.fail(conn, throttle.ADDRESS, address, now)]
            locks = [b for b in blocks if b is not None and b.locked]
            return LoginResult(False, blocked_message(locks[0], now) if locks else WRONG_LOGIN)
        throttle.clear(conn, throttle.USER, name)
        session_id = sessions.start(conn, row.id, now, address)
        audit.record(
            conn, org_id=org_id, actor=name, action="login", target=name, address=address, at=now
        )
    return LoginResult(True, username=name, session_id=session_id)


def log_out(
    engine: Engine, session_id: str | None, address: str | None = None, now: datetime | None = None
) -> None:
    """End the session on the server (the cookie in the browser is then worthless) and audit it."""
    if not session_id:
        return
    now = now or datetime.now(UTC)
    if not sessions.end(engine, session_id, "logout", now):
        return
    name = sessions.username_of(engine, session_id)
    with engine.begin() as conn:
        org_id = conn.execute(select(users.c.org_id).where(users.c.username == name)).scalar()
        audit.record(
            conn,
            org_id=org_id,
            actor=name or "unknown",
            action="logout",
            target=name,
            address=address,
            at=now,
        )
