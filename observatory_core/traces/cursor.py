"""Keyset cursors: where the next page starts, plus the pinned time the list was read at.

A cursor is opaque to users (base64 of JSON). A malformed or foreign one is refused with a
message; it can never widen what the scope sees, because the scope applies regardless.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import datetime

from observatory_core.base.errors import UserError

MAX_CURSOR = 2_000


@dataclass(frozen=True)
class Cursor:
    sort: str
    direction: str
    value: float | str | None  # the sort key of the last row shown
    last_id: int
    as_of: str  # ISO time the first page resolved relative windows at
    max_id: int  # the newest span id when the first page was read: later arrivals stay out

    def encode(self) -> str:
        raw = json.dumps(
            [self.sort, self.direction, self.value, self.last_id, self.as_of, self.max_id]
        )
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    @property
    def as_of_time(self) -> datetime:
        return datetime.fromisoformat(self.as_of)


def decode_cursor(text: str, sort: str, direction: str) -> Cursor:
    bad = UserError("The page cursor is not valid; go back to the first page.")
    if not isinstance(text, str) or len(text) > MAX_CURSOR:
        raise bad
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        sort_, direction_, value, last_id, as_of, max_id = json.loads(raw)
        datetime.fromisoformat(as_of)
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError):
        raise bad from None
    if not all(isinstance(x, int) for x in (last_id, max_id)):
        raise bad
    if not isinstance(value, int | float | str | None):
        raise bad
    if (sort_, direction_) != (sort, direction):
        raise UserError("The page cursor belongs to another sort order; go back to the first page.")
    return Cursor(sort_, direction_, value, last_id, as_of, max_id)
