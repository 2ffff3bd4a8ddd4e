"""FilterSpec -> SQL conditions on `spans`, in one place, for both databases.

Each declared filter (`semantic.fields`) compiles by its kind; the tags, metadata and search
kinds use the per-store constructs of `storage.dialect`."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import and_, or_
from sqlalchemy.sql.expression import ColumnElement

from observatory_core.filters.spec import FilterSpec
from observatory_core.semantic.field_declaration import FilterKind
from observatory_core.semantic.field_lookups import filter_keys
from observatory_core.storage.dialect import json_array_contains, json_object_text, text_search
from observatory_core.storage.schema import spans


def filter_conditions(spec: FilterSpec, now: datetime, dialect: str) -> list[ColumnElement[bool]]:
    """The WHERE conditions that select exactly the spans `spec` describes at `now`."""
    out: list[ColumnElement[bool]] = []
    start, end = spec.window(now)
    if start is not None:
        out.append(spans.c.start_time >= start)
    if end is not None:
        out.append(spans.c.start_time < end)
    keys = filter_keys()
    for key, value in spec.filters().items():
        field = keys[key]
        column = field.expression(spans.c)
        match field.filter:
            case FilterKind.IN_LIST:
                out.append(column.in_(value))
            case FilterKind.RANGE:
                out.append(column >= value if key.startswith("min_") else column <= value)
            case FilterKind.TAGS:
                join = or_ if key.endswith("_any") else and_
                out.append(join(*(json_array_contains(column, t) for t in value)))
            case FilterKind.METADATA:
                out += [json_object_text(column, k) == v for k, v in value]
            case FilterKind.SEARCH:
                text = [spans.c[f] for f in field.filter_reads()]
                out.append(text_search(spans.c.id, *text, value, dialect))
    return out
