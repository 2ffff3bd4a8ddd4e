"""Independent reference: which span ids a FilterSpec selects, computed in plain Python over the
raw rows. Each declared filter (`semantic.fields`) is read by its kind, from the field's value
in a row (`Field.row_value`), never from its SQL."""

from __future__ import annotations

from datetime import datetime

import polars as pl

from observatory_core.filters.spec import FilterSpec
from observatory_core.semantic.fields import FilterKind, filter_keys


def _text_hit(row: dict, columns: tuple[str, ...], needle: str) -> bool:
    needle = needle.lower()
    return any(needle in (row[c] or "").lower() for c in columns)


def _keeps(row: dict, key: str, field, value) -> bool:
    match field.filter:
        case FilterKind.IN_LIST:
            return field.row_value(row) in value
        case FilterKind.RANGE:
            have = field.row_value(row)
            if have is None:
                return False
            return have >= value if key.startswith("min_") else have <= value
        case FilterKind.TAGS:
            tags = set(field.row_value(row) or ())
            return bool(set(value) & tags) if key.endswith("_any") else set(value) <= tags
        case FilterKind.METADATA:
            data = field.row_value(row) or {}
            return all(k in data and str(data.get(k)) == v for k, v in value)
        case FilterKind.SEARCH:
            return _text_hit(row, field.filter_reads(), value)
    raise AssertionError(f"no reference for filter kind {field.filter}")


def reference_ids(df: pl.DataFrame, spec: FilterSpec, now: datetime, org_id: int) -> set[int]:
    expr = pl.col("org_id") == org_id
    start, end = spec.window(now)
    if start is not None:
        expr &= pl.col("start_time") >= start
    if end is not None:
        expr &= pl.col("start_time") < end
    keys = filter_keys()
    filters = spec.filters()
    return {
        r["id"]
        for r in df.filter(expr).to_dicts()
        if all(_keeps(r, key, keys[key], value) for key, value in filters.items())
    }
