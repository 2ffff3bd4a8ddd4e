"""An export's pages on the ClickHouse span store, read in windows of start time so no page
re-reads the spans before or far after it, and CSV lines made by the engine (docs/scale.md,
"Exports on the span store").

The explorer's keyset page (`traces/query._read`) picks each span's newest copy in a derived
table before its ORDER BY ... LIMIT applies, so a page read every span from its cursor to the
end of the window: an export of n spans read n²/(2 x page) rows. Here one statement first
finds the start time of every `read_rows`-th span (the job's filter, each span once, numbered
in start order), and each read then takes only the spans between two of them: the engine
applies the two bounds before it picks the newest copies (start time is the same in every
copy, `stores/clickhouse.SAME_IN_EVERY_COPY`). A read runs on by keyset when ties at its end
make its window longer, and the reads are cut into the job's pages, so the pages hold the
same rows in the same order as the keyset pages (and Parquet the same row groups).

For CSV the engine writes each column's text (`csv_columns`): times, whole numbers, booleans
and text with the quoting of Python's `csv` module, as `exports/writers.csv_text` writes them;
floats come back as numbers and take Python's `repr` here (the engine's float text differs).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Boolean, Float, Integer, String, case, func, literal, select
from sqlalchemy.engine import Engine

from observatory_core.accounts.scope import Scope, scoped_spans
from observatory_core.accounts.visibility import require_fields, require_filters
from observatory_core.filters.spec import FilterSpec
from observatory_core.semantic.fields import FIELDS
from observatory_core.storage.dialect import epoch_us
from observatory_core.storage.schema import spans
from observatory_core.storage.types import UtcDateTime
from observatory_core.traces.cursor import Cursor
from observatory_core.traces.fields import field_column
from observatory_core.traces.paging import after
from observatory_core.traces.query import pinned_conditions

_start, _id = spans.c.start_time, spans.c.id
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
KEYS = 2  # the columns of a row before the asked-for ones: start time and id


def _bounds(engine: Engine, scope: Scope, where: list, every: int) -> list[datetime]:
    """The start time of every `every`-th matching span (each span once) and of the last,
    ascending and distinct: the ends of the windows the reads take (none without spans). One
    row always: an empty answer would make the driver ask again for its columns."""
    numbered = scoped_spans(
        scope,
        epoch_us(_start).label("s"),
        func.row_number().over(order_by=_start).label("n"),
    ).where(*where)
    inner = numbered.subquery()
    query = select(func.groupArrayIf(inner.c.s, inner.c.n % every == 0), func.max(inner.c.s))
    with engine.connect() as conn:
        ends, last = conn.execute(query).one()
    if last is None:
        return []
    return [EPOCH + timedelta(microseconds=us) for us in sorted({*ends, last})]


def _literal_time(value: datetime):
    return literal(value, type_=_start.type)


def store_pages(
    engine: Engine,
    scope: Scope,
    spec: FilterSpec,
    columns: list,
    *,
    as_of: datetime,
    max_id: int,
    page_size: int,
    read_rows: int = 0,
) -> Iterator[list]:
    """Every matching span's `columns`, oldest first (by start time, then id, as the keyset
    pages), in pages of exactly `page_size` rows but the last: each row its start time (in
    microseconds) and id, then the `columns` (`KEYS` to skip). Each read
    holds up to `read_rows` spans (at least a page): at 100k spans, reads of 20,000 took about
    half the time of reads of 5,000 (docs/scale.md)."""
    where = pinned_conditions(engine, spec, as_of, max_id)
    read_rows = max(page_size, read_rows)
    ends = _bounds(engine, scope, where, read_rows)
    held: list[tuple] = []
    lower: datetime | None = None  # the window is (lower, upper]
    for upper in ends:
        position: Cursor | None = None
        while True:
            window = list(where)
            if lower is not None:
                window.append(_start > _literal_time(lower))
            window.append(_start <= _literal_time(upper))
            if position is not None:
                window.append(after(_start, _id, position))
                window.append(_start >= _literal_time(position.value))
            query = (
                scoped_spans(scope, epoch_us(_start).label("start_"), _id.label("id_"), *columns)
                .where(*window)
                .order_by(_start, _id)
                .limit(read_rows + 1)
            )
            with engine.connect() as conn:  # one per read: a long export holds none between
                got = conn.execute(query).all()
            held.extend(got[:read_rows])
            while len(held) >= page_size:
                yield held[:page_size]
                held = held[page_size:]
            if len(got) <= read_rows:
                break
            last = got[read_rows - 1]
            start = EPOCH + timedelta(microseconds=last[0])
            position = Cursor("start_time", "asc", start, last[1], "", max_id)
        lower = upper
    if held:
        yield held


def row_pages(
    engine: Engine,
    scope: Scope,
    spec: FilterSpec,
    *,
    fields: tuple[str, ...],
    as_of: datetime,
    max_id: int,
    page_size: int,
    read_rows: int = 0,
) -> Iterator[list[dict]]:
    """`store_pages` as the rows `traces/query.iter_span_pages` gives: dicts of the fields'
    values (for the writers' row path)."""
    require_filters(scope, spec)
    require_fields(scope, fields, "export")
    columns = [field_column(f) for f in fields]
    for page in store_pages(
        engine,
        scope,
        spec,
        columns,
        as_of=as_of,
        max_id=max_id,
        page_size=page_size,
        read_rows=read_rows,
    ):
        yield [dict(zip(fields, row[KEYS:], strict=True)) for row in page]


# -- CSV text by the engine ------------------------------------------------------------------

_NEEDS_QUOTES = '[,"\n]'  # what Python's csv module quotes (lineterminator "\n"; not "\r")


def _text(value):
    """`csv_text` of a text value, quoted as `csv.writer` quotes it."""
    plain = func.ifNull(value, "")
    quoted = func.concat('"', func.replaceAll(plain, '"', '""'), '"')
    return case((func.match(plain, _NEEDS_QUOTES), quoted), else_=plain)


def _csv_column(name: str):
    """The engine's expression for a field's CSV text, or None: a float (Python's `repr` is
    written here) or a type this path does not write (JSON, a field not stored as a column)."""
    column = field_column(name)
    kind = column.type
    if isinstance(kind, Float):
        return None
    if isinstance(kind, UtcDateTime):  # DateTime64(6, 'UTC'): "2026-10-05 15:00:07.796400"
        iso = func.concat(func.replaceOne(func.toString(column), " ", "T"), "+00:00")
        return func.ifNull(iso, "")
    if isinstance(kind, Boolean):
        return case((column.is_(None), ""), (column, "true"), else_="false")
    if isinstance(kind, Integer):
        return func.ifNull(func.toString(column), "")
    if isinstance(kind, String):
        return _text(column)
    raise TypeError(name)


@dataclass(frozen=True)
class CsvColumns:
    """What a CSV page reads: runs of fields' text joined by the engine (a str each) and
    floats (a float each, `is_float`), in the fields' order."""

    columns: list
    is_float: list[bool]


def csv_columns(fields: tuple[str, ...]) -> CsvColumns | None:
    """The columns a CSV page reads, or None when the engine cannot write these fields' text
    (the row path writes them): a JSON field, a key of one, an expression field, or a single
    column (`csv` quotes an empty lone field)."""
    if len(fields) < 2:
        return None
    columns: list = []
    is_float: list[bool] = []
    run: list = []  # the current run of text columns
    for name in fields:
        field = FIELDS.get(name)
        if field is None or not field.plain or field.type == "json":
            return None
        column = field_column(name)
        if not isinstance(column.type, Float | UtcDateTime | Boolean | Integer | String):
            return None
        if isinstance(column.type, Float):
            if run:
                columns.append(_joined(run, len(columns)))
                is_float.append(False)
                run = []
            columns.append(column)
            is_float.append(True)
        else:
            run.append(_csv_column(name))
    if run:
        columns.append(_joined(run, len(columns)))
        is_float.append(False)
    return CsvColumns(columns, is_float)


def _joined(run: list, position: int):
    """A run of text columns as one: their texts with commas between."""
    parts = [run[0]]
    for column in run[1:]:
        parts += [",", column]
    return (func.concat(*parts) if len(parts) > 1 else parts[0]).label(f"csv_{position}")


def _float_texts(values) -> list[str]:
    """`csv_text` of floats: Python's shortest repr, without a trailing ".0"."""
    texts = ["" if v is None else repr(v) for v in values]
    return [t[:-2] if t.endswith(".0") else t for t in texts]


def csv_lines(page: list, plan: CsvColumns) -> list[str]:
    """A page's CSV lines (without their newline) from `store_pages`' rows of `plan`."""
    if len(plan.is_float) == 1:
        return [row[KEYS] for row in page]
    columns = [
        _float_texts(values) if is_float else values
        for values, is_float in zip(
            list(zip(*page, strict=True))[KEYS:], plan.is_float, strict=True
        )
    ]
    return list(map(",".join, zip(*columns, strict=True)))
