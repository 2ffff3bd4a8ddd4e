"""JSON lines and JSON text made by the engine on the ClickHouse span store, the same bytes as
`exports/writers.JsonLinesWriter` / `JsonWriter` write from rows (docs/span-store-internals.md,
"Exports").

The writers write each row as `json.dumps({field: value})`: keys in the fields' order, ", "
and ": " between, strings with `ensure_ascii` (non-ASCII and DEL as `\\uXXXX`, control
characters as `\\n`, `\\t`... or lowercase `\\u00xx`), times as ISO text with microseconds,
None as null. The engine writes each run of text, time, integer and boolean fields as one
string of `"key": value` pairs, strings by `toJSONString`, which escapes as Python does but
for "/" (escaped there), the control characters whose hex code has a letter (uppercase there)
and non-ASCII and DEL (left as they are): those few lines are mended here (a chain of
replacements or a byte-by-byte escape in the engine made every read slower, rare values or
not). Floats, JSON fields, keys of them and expression fields are read as values and written
by `json.dumps` here, as the row path does.
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


def _string(value):
    return func.ifNull(func.toJSONString(value), "null")


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
# what `toJSONString` escapes unlike `json.dumps`: "/" (Python: left as it is) and control
# characters with uppercase hex (Python: lowercase), each an escape only after an even run of
# backslashes (after an odd one it is text: `\\/` is a backslash and "/")
_UNLIKE = re.compile(r"(?<!\\)((?:\\\\)*)\\(/|u00(?:0[BEF]|1[A-F]))")


def _ascii(match: re.Match) -> str:
    return encode_basestring_ascii(match.group())[1:-1]


def _as_python(match: re.Match) -> str:
    escape = match.group(2)
    return match.group(1) + ("/" if escape == "/" else "\\" + escape.lower())


def _as_python_escapes(line: str) -> str:
    """The engine's line as `json.dumps` escapes: non-ASCII and DEL as `\\uXXXX`, control
    characters' hex in lowercase, "/" not escaped."""
    if not line.isascii():
        line = _NON_ASCII.sub(_ascii, line)
    if "\x7f" in line:
        line = line.replace("\x7f", "\\u007f")
    if "\\/" in line or "\\u00" in line:
        line = _UNLIKE.sub(_as_python, line)
    return line


def json_lines(page: list, plan: JsonColumns) -> list[str]:
    """A page's JSON objects, one a row, from `store_pages`' rows of `plan`."""
    columns = []
    for values, to_text, key in zip(
        list(zip(*page, strict=True))[KEYS:], plan.to_text, plan.keys, strict=True
    ):
        columns.append(values if to_text is None else [key + text for text in to_text(values)])
    lines = ["{" + ", ".join(parts) + "}" for parts in zip(*columns, strict=True)]
    return [
        line
        if line.isascii() and "\\" not in line and "\x7f" not in line
        else _as_python_escapes(line)
        for line in lines
    ]


def json_text_plan(fields: tuple[str, ...]) -> TextPlan | None:
    """JSON objects by the engine (`json_columns`), or None: the row path."""
    plan = json_columns(fields)
    return None if plan is None else TextPlan(plan.columns, lambda page: json_lines(page, plan))
