"""Who is behind a request outside Streamlit: the login cookie streamlit-authenticator sets.

It is a JWT (HS256) signed with the server's cookie key, holding the username and an expiry.
"""

from __future__ import annotations

from datetime import UTC, datetime

import jwt


def username_from_cookie(token: str | None, cookie_key: str) -> str | None:
    """The logged-in username, or None for a missing, forged or expired cookie."""
    if not token:
        return None
    try:
        claims = jwt.decode(token, cookie_key, algorithms=["HS256"])
    except jwt.PyJWTError:
        return None
    expires = claims.get("exp_date")
    if not isinstance(expires, int | float) or expires < datetime.now(UTC).timestamp():
        return None
    username = claims.get("username")
    return username if isinstance(username, str) else None


def make_cookie(username: str, cookie_key: str, expires: datetime) -> str:
    """The same token the login sets; used by tests and scripts."""
    return jwt.encode(
        {"username": username, "exp_date": expires.timestamp()}, cookie_key, algorithm="HS256"
    )
