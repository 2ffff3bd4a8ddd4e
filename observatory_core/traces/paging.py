"""Keyset paging shared by the span and trace lists: the cursor condition and the page's end."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import literal, tuple_

from observatory_core.storage.schema import spans
from observatory_core.traces.cursor import Cursor


def after(key, last_id, cursor: Cursor):
    """Rows past the cursor's (value, id) in its direction: keyset paging, no OFFSET."""
    value = cursor.value
    if isinstance(key.type, type(spans.c.start_time.type)) and isinstance(value, str):
        value = datetime.fromisoformat(value)
    # Bind with the column's own type: inside tuple_() SQLAlchemy would fall back to the
    # impl type, and SQLite would compare integer microseconds with a date string.
    here = tuple_(literal(value, type_=key.type), literal(cursor.last_id, type_=last_id.type))
    if cursor.direction == "desc":
        return tuple_(key, last_id) < here
    return tuple_(key, last_id) > here


def position_time(cursor: Cursor) -> datetime:
    """A keyset position's start time (a cursor carries it as text)."""
    value = cursor.value
    return datetime.fromisoformat(value) if isinstance(value, str) else value


def _cursor_value(value):
    return value.isoformat() if isinstance(value, datetime) else value


def page_end(rows, limit, sort, direction, as_of, max_id):
    """Trim the look-ahead row and make the next cursor from the last row kept."""
    more = len(rows) > limit
    rows = rows[:limit]
    if not more:
        return rows, None
    last = rows[-1]
    return rows, Cursor(
        sort, direction, _cursor_value(last[sort]), last["id"], as_of.isoformat(), max_id
    ).encode()
