"""The login cookie: a JWT (HS256) signed with the server's cookie key, holding the username,
an expiry and the id of a server-side session (observatory_core/accounts/sessions.py).

The signature proves the server issued it; the session decides whether it still counts, so
logging out, idling or being disabled ends it whatever the browser keeps.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import jwt
from sqlalchemy.engine import Engine

from observatory_core.accounts import sessions


def claims_from_cookie(token: str | None, cookie_key: str) -> dict | None:
    """The cookie's claims, or None for a missing, forged or expired cookie."""
    if not token:
        return None
    try:
        claims = jwt.decode(token, cookie_key, algorithms=["HS256"])
    except jwt.PyJWTError:
        return None
    expires = claims.get("exp_date")
    if not isinstance(expires, int | float) or expires < datetime.now(UTC).timestamp():
        return None
    if not isinstance(claims.get("username"), str) or not isinstance(claims.get("sid"), str):
        return None  # cookies from before server-side sessions carry no session id
    return claims


def username_from_cookie(
    token: str | None, cookie_key: str, engine: Engine, idle: timedelta
) -> str | None:
    """The logged-in username, or None unless the cookie is genuine and its session live."""
    claims = claims_from_cookie(token, cookie_key)
    if claims is None:
        return None
    resumed = sessions.resume(engine, claims["sid"], idle)
    if resumed.username != claims["username"]:
        return None
    return resumed.username


def make_cookie(username: str, session_id: str, cookie_key: str, expires: datetime) -> str:
    """The token the login sets (also used by tests and scripts)."""
    return jwt.encode(
        {"username": username, "sid": session_id, "exp_date": expires.timestamp()},
        cookie_key,
        algorithm="HS256",
    )
