"""CSV lines made whole by the engine on the ClickHouse span store, the same bytes as
`exports/writers.CsvWriter.write_rows` writes from rows (docs/span-store-internals.md, "Exports").

Each line is one string the engine makes, its newline included: times as ISO text with six
digits and `+00:00`, whole numbers by `toString`, booleans `true`/`false`, null as empty,
text quoted when it holds a comma, a quote or a line feed (what `csv.writer` with
`lineterminator="\\n"` quotes; it leaves `\\r` bare) with its quotes doubled, and floats as
Python's `repr` without a trailing `.0` (`_float_text`). The reads come back as one column of
bytes (`storage/clickhouse/sql.read_columns`), so a page is written by one `b"".join`: no
value, tuple or row object per line in Python.
"""

from __future__ import annotations

from sqlalchemy import Boolean, Float, Integer, String, Text, case, func
from sqlalchemy.sql.elements import Label

from observatory_core.exports.span_store_pages import TextPlan
from observatory_core.semantic.fields import FIELDS
from observatory_core.storage.clickhouse.sql import read_columns
from observatory_core.storage.types import UtcDateTime
from observatory_core.traces.fields import field_column

LINE = "csv_line"


def _text(value):
    """`csv_text` of a text value, quoted as `csv.writer` quotes it: one search for each of
    the three characters (a regular expression's `match` took half as long again)."""
    plain = func.ifNull(value, "")
    needs_quotes = (
        (func.position(plain, ",") > 0)
        | (func.position(plain, '"') > 0)
        | (func.position(plain, "\n") > 0)
    )
    quoted = func.concat('"', func.replaceAll(plain, '"', '""'), '"')
    return case((needs_quotes, quoted), else_=plain)


def _two_digits(number):
    text = func.toString(number)
    return case((number < 10, func.concat("0", text)), else_=text)


def _mantissa(pattern: str, text):
    """`text`'s digits as `d.ddd` (`d` alone for one digit), `pattern` matching the sign, the
    first digit and the rest in groups 1-3."""
    return func.replaceRegexpOne(func.replaceRegexpOne(text, pattern, r"\1\2.\3"), r"\.$", "")


def _float_text(column):
    """`csv_text` of a float: Python's `repr`, without a trailing `.0`. The engine's
    `toString` writes the same shortest digits, in another notation where Python's differs:
    its exponent without `+` or a leading zero (`7.8e-7`, `1e22`: Python's `7.8e-07`, `1e+22`)
    below 1e-6 and from 1e21, and plain digits where Python writes an exponent (below 1e-4,
    `0.000025` for `2.5e-05`, and from 1e16, `15000000000000000` for `1.5e+16`). Those three
    are rewritten here; zero, `nan`, `inf` and everything from 1e-4 to 1e16 are its text.
    Each step is one regular expression: nested string functions (6,000 characters of SQL
    a column) made the engine's analysis of every read longer (docs/span-store-internals.md,
    "Exports")."""
    text = func.toString(column)
    size = func.abs(column)
    exponent = func.replaceRegexpOne(
        func.replaceRegexpOne(text, r"e(\d)", r"e+\1"), r"e([+-])(\d)$", r"e\10\2"
    )
    zeros = func.length(func.replaceRegexpOne(text, r"^-?0\.(0*).*$", r"\1"))
    small = func.concat(_mantissa(r"^(-?)0\.0*([1-9])(\d*)$", text), "e-", _two_digits(zeros + 1))
    digits = func.length(text) - case((column < 0, 1), else_=0)
    large = func.concat(_mantissa(r"^(-?)([1-9])(\d*?)0*$", text), "e+", func.toString(digits - 1))
    return case(
        (column.is_(None), ""),
        (func.position(text, "e") > 0, exponent),
        ((size < 1e-4) & (column != 0), small),
        ((size >= 1e16) & func.isFinite(column), large),
        else_=text,
    )


def _csv_text(name: str):
    """The engine's expression for a field's CSV text, or None: a type this path does not
    write (JSON, a field not stored as a column)."""
    column = field_column(name)
    kind = column.type
    if isinstance(kind, Float):
        return _float_text(column)
    if isinstance(kind, UtcDateTime):  # DateTime64(6, 'UTC'): "2026-10-05 15:00:07.796400"
        iso = func.concat(func.replaceOne(func.toString(column), " ", "T"), "+00:00")
        return func.ifNull(iso, "")
    if isinstance(kind, Boolean):
        return case((column.is_(None), ""), (column, "true"), else_="false")
    if isinstance(kind, Integer):
        return func.ifNull(func.toString(column), "")
    if isinstance(kind, String):
        return _text(column)
    return None


def csv_line(fields: tuple[str, ...]) -> Label | None:
    """The engine's expression for a row's CSV line, its newline included, or None when the
    engine cannot write these fields' text (the row path writes them): a JSON field, a key of
    one, an expression field, or a single column (`csv` quotes an empty lone field)."""
    if len(fields) < 2:
        return None
    parts: list = []
    for name in fields:
        field = FIELDS.get(name)
        if field is None or not field.plain or field.type == "json":
            return None
        text = _csv_text(name)
        if text is None:
            return None
        parts += [text, ","]
    parts[-1] = "\n"
    return func.concat(*parts).label(LINE)


def _read_lines(engine, query):
    """A read's lines (bytes, not decoded) and the (start, id) of its line i."""
    starts, ids, lines = read_columns(engine, query, {LINE: "bytes"})
    return lines, lambda i: (starts[i], ids[i])


def csv_line_plan(fields: tuple[str, ...]) -> TextPlan | None:
    """CSV lines by the engine (`csv_line`), written a page in one write, or None: the row
    path."""
    line = csv_line(fields)
    if line is None:
        return None
    # long text (prompts, error messages: up to the ingestion's cut each) keeps the rows'
    # reads: 100,000 lines of 32 KB would pass the engine's memory bound for one read
    short = not any(isinstance(field_column(f).type, Text) for f in fields)
    return TextPlan([line], b"".join, "write_bytes", read=_read_lines, reads_lines=short)
