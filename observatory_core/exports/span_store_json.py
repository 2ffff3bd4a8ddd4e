"""JSON lines and JSON text made by the engine on the ClickHouse span store, the same bytes as
`exports/writers.JsonLinesWriter` / `JsonWriter` write from rows (docs/scale.md, "Exports on
the span store").

The writers write each row as `json.dumps({field: value})`: keys in the fields' order, ", "
and ": " between, strings with `ensure_ascii` (non-ASCII and DEL as `\\uXXXX`, control
characters as `\\n`, `\\t`... or lowercase `\\u00xx`), times as ISO text with microseconds,
None as null. The engine writes each run of text, time, integer and boolean fields as one
string of `"key": value` pairs; its `toJSONString` escapes as Python does but for `/` (undone
here), the control characters whose hex code has a letter (uppercase there; such a value is
escaped by a chain of replacements instead) and non-ASCII (left as UTF-8, escaped here on the
few lines that hold any). Floats (Python's `repr`), JSON fields, keys of them and expression
fields are read as values and written by `json.dumps` here, as the row path does.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii

from sqlalchemy import Boolean, Float, Integer, String, case, func

from observatory_core.exports.span_store_pages import KEYS, TextPlan
from observatory_core.exports.writers import _plain
from observatory_core.semantic.fields import FIELDS
from observatory_core.storage.types import UtcDateTime
from observatory_core.traces.fields import field_column

# control characters `toJSONString` writes as `\u000B`... (Python: lowercase) and DEL (Python
# with ensure_ascii: `\u007f`; the engine leaves it)
_UPPER_HEX = "[\\x0b\\x0e\\x0f\\x1a-\\x1f\\x7f]"
_PY_ESCAPES = {8: "\\b", 9: "\\t", 10: "\\n", 12: "\\f", 13: "\\r"}


def _escaped_by_chain(value):
    """A string's JSON text by replacements, as `json.dumps` escapes it but for non-ASCII."""
    text = func.replaceAll(func.replaceAll(value, "\\", "\\\\"), '"', '\\"')
    for code in (*range(32), 127):
        text = func.replaceAll(text, func.char(code), _PY_ESCAPES.get(code, f"\\u{code:04x}"))
    return func.concat('"', text, '"')


def _string(value):
    fast = func.replaceAll(func.toJSONString(value), "\\/", "/")
    return func.ifNull(
        case((func.match(value, _UPPER_HEX), _escaped_by_chain(value)), else_=fast), "null"
    )


def _engine_text(column):
    """The engine's JSON text of a stored column, or None (floats, JSON: written here)."""
    kind = column.type
    if isinstance(kind, UtcDateTime):  # DateTime64(6, 'UTC'): "2026-10-05 15:00:07.796400"
        iso = func.concat('"', func.replaceOne(func.toString(column), " ", "T"), '+00:00"')
        return func.ifNull(iso, "null")
    if isinstance(kind, Boolean):
        return case((column.is_(None), "null"), (column, "true"), else_="false")
    if isinstance(kind, Integer):
        return func.ifNull(func.toString(column), "null")
    if isinstance(kind, String):
        return _string(column)
    return None


def _json_floats(values: tuple) -> list[str]:
    """`json.dumps` of each float (or None), in one call: its text of a list, split (no
    float's text holds ", ")."""
    return json.dumps(list(values))[1:-1].split(", ")


def _json_values(values: tuple) -> list[str]:
    return [json.dumps(_plain(value)) for value in values]


@dataclass(frozen=True)
class JsonColumns:
    """What a JSON page reads: runs of `"key": value` text joined by the engine (a str each,
    `to_text` None) and values written here (`to_text` a column's JSON texts), in the fields'
    order."""

    columns: list
    to_text: list[Callable[[tuple], list[str]] | None]
    keys: list[str]  # '"field": ' before a value written here; "" before a run


def json_columns(fields: tuple[str, ...]) -> JsonColumns | None:
    """The columns a JSON page reads, or None when no field is written by the engine."""
    columns: list = []
    to_text: list = []
    keys: list[str] = []
    run: list = []

    def close_run() -> None:
        if run:
            parts = [run[0]]
            for part in run[1:]:
                parts += [", ", part]
            columns.append(func.concat(*parts).label(f"json_{len(columns)}"))
            to_text.append(None)
            keys.append("")
            run.clear()

    for name in fields:
        field = FIELDS.get(name)
        column = field_column(name)
        text = None
        if field is not None and field.plain and field.type != "json":
            text = _engine_text(column)
        key = json.dumps(name) + ": "
        if text is not None:
            run.append(func.concat(key, text))
            continue
        close_run()
        columns.append(column)
        is_float = field is not None and field.plain and isinstance(column.type, Float)
        to_text.append(_json_floats if is_float else _json_values)
        keys.append(key)
    close_run()
    if all(t is not None for t in to_text):
        return None
    return JsonColumns(columns, to_text, keys)


_NON_ASCII = re.compile("[^\\x00-\\x7f]+")


def _ascii(match: re.Match) -> str:
    return encode_basestring_ascii(match.group())[1:-1]


def json_lines(page: list, plan: JsonColumns) -> list[str]:
    """A page's JSON objects, one a row, from `store_pages`' rows of `plan`."""
    columns = []
    for values, to_text, key in zip(
        list(zip(*page, strict=True))[KEYS:], plan.to_text, plan.keys, strict=True
    ):
        columns.append(values if to_text is None else [key + text for text in to_text(values)])
    lines = ["{" + ", ".join(parts) + "}" for parts in zip(*columns, strict=True)]
    return [line if line.isascii() else _NON_ASCII.sub(_ascii, line) for line in lines]


def json_text_plan(fields: tuple[str, ...]) -> TextPlan | None:
    """JSON objects by the engine (`json_columns`), or None: the row path."""
    plan = json_columns(fields)
    return None if plan is None else TextPlan(plan.columns, lambda page: json_lines(page, plan))
