"""Signed, expiring download links: the server's HTTP route streams the file from disk.

A link names the job and the org and carries an HMAC made with the server's secret; the
route also checks the visitor's login cookie, so only a user of the job's org can use it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta

from observatory_core.base.errors import UserError

LINK_LIFETIME = timedelta(minutes=15)


class BadLink(UserError):
    """A tampered, malformed or expired link."""


def _mac(secret: str, payload: bytes) -> str:
    digest = hmac.new(secret.encode(), payload, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def sign_download(secret: str, job_id: int, org_id: int, now: datetime | None = None) -> str:
    expires = int(((now or datetime.now(UTC)) + LINK_LIFETIME).timestamp())
    payload = json.dumps([job_id, org_id, expires], separators=(",", ":")).encode()
    body = base64.urlsafe_b64encode(payload).decode().rstrip("=")
    return f"{body}.{_mac(secret, payload)}"


def verify_download(secret: str, token: str, now: datetime | None = None) -> tuple[int, int]:
    """(job_id, org_id) of a valid link; BadLink otherwise."""
    try:
        body, mac = token.split(".", 1)
        payload = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        job_id, org_id, expires = json.loads(payload)
    except (ValueError, TypeError):
        raise BadLink(
            "This download link is not valid; open the Exports page for a new one."
        ) from None
    if not hmac.compare_digest(mac, _mac(secret, payload)):
        raise BadLink("This download link is not valid; open the Exports page for a new one.")
    if not all(isinstance(x, int) for x in (job_id, org_id, expires)):
        raise BadLink("This download link is not valid; open the Exports page for a new one.")
    if (now or datetime.now(UTC)).timestamp() > expires:
        raise BadLink("This download link has expired; open the Exports page for a new one.")
    return job_id, org_id
