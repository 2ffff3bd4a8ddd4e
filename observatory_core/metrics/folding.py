"""Folding the long tail of groups into one "(other)" group, in the database.

An answer may hold at most `metrics_max_groups` groups: past that the top groups (by the first
series) are kept and every other span is aggregated into one more group, by the same query with
each group-by column replaced by `CASE WHEN <group key> IN (kept keys) THEN column ELSE '(other)'`.
So every aggregation of "(other)" is exact (percentiles included), and the answer never holds
the whole cross product of groups and buckets. See docs/architecture.md.
"""

from __future__ import annotations

import polars as pl
from sqlalchemy import String, bindparam, case, cast, func, literal, null
from sqlalchemy.sql.expression import ColumnElement

OTHER = "(other)"
_SEPARATOR = "\x1f"
FOLD_KEYS = "fold_keys"


def _key(columns: list[ColumnElement]) -> ColumnElement:
    """One text per group: the group-by values, NULL as '', joined by a unit separator. Text is
    not cast: ClickHouse casts to a non-Nullable String and refuses a NULL (a tool span's model)."""
    parts = [
        func.coalesce(c if isinstance(c.type, String) else cast(c, String), literal(""))
        for c in columns
    ]
    key = parts[0]
    for part in parts[1:]:
        key = key.concat(literal(_SEPARATOR)).concat(part)
    return key


def folded_columns(columns: list[ColumnElement], names: tuple[str, ...]) -> list[ColumnElement]:
    """The group-by columns with every group outside the kept keys mapped to "(other)"
    (NULL for the project id, which is never NULL otherwise)."""
    kept = _key(columns).in_(bindparam(FOLD_KEYS, expanding=True))
    return [
        case((kept, c), else_=null() if name == "project" else literal(OTHER)).label(name)
        for c, name in zip(columns, names, strict=True)
    ]


def python_keys(frame: pl.DataFrame, group_by: tuple[str, ...]) -> list[str]:
    """The same keys as `_key` computes in SQL, for the groups of a result frame."""
    text = [frame[g].cast(pl.Utf8).fill_null("").to_list() for g in group_by]
    return [_SEPARATOR.join(values) for values in zip(*text, strict=True)]


def is_other(frame: pl.DataFrame, group_by: tuple[str, ...]) -> pl.Series:
    """True on the folded group's rows."""
    g = group_by[0]
    return frame[g].is_null() if g == "project" else (frame[g] == OTHER).fill_null(False)
