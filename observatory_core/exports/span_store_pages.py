"""An export's pages on the ClickHouse span store, read in windows of start time so no page
re-reads the spans before or far after it, and CSV lines made by the engine
(docs/span-store-internals.md, "Exports").

The explorer's keyset page (`traces/query._read`) is the engine's top-n sort of every span
from its cursor to the end of the window (no index serves the order), so keyset pages would
read n²/(2 x page) rows for an export of n spans. Here one statement first numbers the stored
rows in start order (under the job's scope, time window and pin) and finds the start time of
every `read_rows`-th row that matches the job's filter on its own columns, or of every few
reads' rows (`windows`); each read then takes only the spans between two of them. Each span is
one stored row since schema version 7, but the numbering still counts raw rows, so a copy
racing writers left before the fold only makes a window hold fewer spans: start time is the
same in every copy (`stores/_copies.SAME_IN_EVERY_COPY`), so no wanted span falls outside the
windows. A read runs on by keyset when ties at its end
make its window longer, and the reads are cut into the job's pages, so the pages hold the
same rows in the same order as the keyset pages (and Parquet the same row groups). CSV's
lines are made whole by the engine (`span_store_csv.py`) and read as a column of bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import (
    and_,
    func,
    literal,
    select,
    table,
    true,
)
from sqlalchemy import column as named_column
from sqlalchemy.engine import Engine
from sqlalchemy.sql import visitors
from sqlalchemy.sql.expression import CTE, ColumnClause, ScalarSelect, Select

from observatory_core.accounts.scope import Scope, scoped_spans, span_conditions
from observatory_core.accounts.visibility import require_fields, require_filters
from observatory_core.base.zones import Zone
from observatory_core.exports.local_times import with_local
from observatory_core.filters.spec import FilterSpec
from observatory_core.storage.dialect import arrival_order, epoch_us, text_search
from observatory_core.storage.schema import spans
from observatory_core.storage.stores._copies import same_in_every_copy
from observatory_core.traces.cursor import Cursor
from observatory_core.traces.fields import field_column
from observatory_core.traces.paging import after
from observatory_core.traces.query import pinned_conditions

_start, _id = spans.c.start_time, spans.c.id
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
KEYS = 2  # the columns of a row before the asked-for ones: start time and id


@dataclass(frozen=True)
class Windows:
    """The windows an export reads: `ends` ascending and distinct, each window `(previous end,
    end]`; `open_end`: spans after the last end may still be wanted (the copies numbered
    stopped at the job's row limit); `matching`: the stored rows numbered that match the
    job's filter on their own columns, or the row limit when the numbering stopped there (at
    least the job's rows): its progress's total."""

    ends: list[datetime]
    open_end: bool
    matching: int


def _raw_copies(engine: Engine):
    """`spans` as its stored rows, every copy of a span a row: since schema version 8 the same
    table `spans` compiles to on the span store, named here apart so the numbering's
    conditions are written on it alone."""
    database = engine.dialect.observatory_database  # set by SpanStore.engine
    return table("spans", *(named_column(c.name, c.type) for c in spans.c), schema=database)


def _on_own_columns(clause) -> bool:
    """Whether a condition reads only a stored row's own columns: not the id (before schema
    version 8 the derived table's; still left to the reads), a subquery, a CTE, a text search,
    the pin or another table's column."""
    for element in visitors.iterate(clause):
        if isinstance(element, Select | ScalarSelect | CTE | text_search | arrival_order):
            return False
        owner = getattr(element, "table", None) if isinstance(element, ColumnClause) else None
        if owner is not None and (owner is not spans or element.name == "id"):
            return False
    return True


def _to_raw(raw, conditions: list) -> list:
    """`conditions` on `_raw_copies`' columns instead of `spans`'."""

    def to_raw(element):
        if isinstance(element, ColumnClause) and getattr(element, "table", None) is spans:
            return raw.c[element.name]
        return None

    return [visitors.replacement_traverse(c, {}, to_raw) for c in conditions]


READS_PER_WINDOW = 10  # a window ends after at most this many reads' worth of copies (K)


def windows(
    engine: Engine, scope: Scope, where: list, every: int, row_limit: int | None = None
) -> Windows:
    """The start time of every `every`-th stored row that matches the job's filter, or of
    every K-th row (`READS_PER_WINDOW` x `every`) whichever comes first, and of the last: one
    sort of the raw rows (numbering each span's newest copy, as first written, made the engine
    pick the copies of the whole job at once; docs/span-store-internals.md, "Exports"). The
    conditions alike in every copy (scope, time window, pin: `same_in_every_copy`) select the rows;
    those on a row's own columns (status, model, numbers: `_on_own_columns`) mark the matching ones.
    A span the job wants is a matching row (a racing copy not yet folded is one more): a window
    holds at most `every` wanted spans but for ties at its end (the reads run on by keyset), and at
    most K rows however narrow the filter. With `row_limit`, the first `max(row_limit, K)` rows only
    (the engine's sort with a limit: a narrow filter still gets whole windows). One row always: an
    empty answer would make the driver ask again for its columns."""
    raw = _raw_copies(engine)
    conditions = [*span_conditions(scope), *where]
    alike = [c for c in conditions if same_in_every_copy(c)]
    own = [c for c in conditions if not same_in_every_copy(c) and _on_own_columns(c)]
    matches = and_(*_to_raw(raw, own)) if own else true()
    first = (
        select(
            epoch_us(raw.c.start_time).label("s"),
            func.ifNull(func.toUInt8(matches), 0).label("p"),
        )
        .select_from(raw)
        .where(*_to_raw(raw, alike))
        .order_by(raw.c.start_time)
    )
    most = every * READS_PER_WINDOW
    limit = None if row_limit is None else max(row_limit, most)
    if limit is not None:
        first = first.limit(limit)
    starts = first.subquery()
    in_order = {"order_by": starts.c.s, "rows": (None, 0)}
    numbered = select(
        starts.c.s,
        starts.c.p,
        func.row_number().over(**in_order).label("n"),
        func.sum(starts.c.p).over(**in_order).label("m"),
    ).subquery()
    n, m, p, s = numbered.c.n, numbered.c.m, numbered.c.p, numbered.c.s
    query = select(
        func.groupArrayIf(s, ((p == 1) & (m % every == 0)) | (n % most == 0)),
        func.max(s),
        func.count(),
        func.sum(p),
    )
    with engine.connect() as conn:
        ends, last, copies, matching = conn.execute(query).one()
    if not copies:
        return Windows([], False, 0)
    open_end = limit is not None and copies >= limit
    times = sorted({*ends, last})
    # the rows written are at most the matching copies, or the limit when copies stopped
    total = max(matching, row_limit) if open_end and row_limit is not None else matching
    return Windows([EPOCH + timedelta(microseconds=us) for us in times], open_end, total)


def _literal_time(value: datetime):
    return literal(value, type_=_start.type)


class KeysetStalled(RuntimeError):
    """A window's read ended where the one before it did: a keyset step that does not advance."""


def _rows(engine: Engine, query: Select) -> tuple[list, Callable[[int], tuple[int, int]]]:
    """A read's rows through SQLAlchemy, and the (start, id) of its row i."""
    with engine.connect() as conn:  # one per read: a long export holds none between
        got = conn.execute(query).all()
    return got, lambda i: (got[i][0], got[i][1])


def _reads(engine, scope, where, columns, lower, upper, read_rows: int, max_id: int, read=_rows):
    """The rows of one window `(lower, upper]`, a read at a time (`read`: the rows and their
    keys, `_rows` or the CSV lines' `span_store_csv._read_lines`): a read of `read_rows` + 1
    that comes back full runs on by keyset. A read whose last (start, id) is not after the
    previous read's raises `KeysetStalled` rather than read on forever."""
    position: Cursor | None = None
    previous: tuple[int, int] | None = None
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
        got, key = read(engine, query)
        yield got[:read_rows]
        if len(got) <= read_rows:
            return
        last = key(read_rows - 1)  # (start in microseconds, id)
        if previous is not None and last <= previous:
            raise KeysetStalled(
                f"An export's read in the window ending {upper} ended at or before the read "
                "before it; its keyset step does not advance."
            )
        previous = last
        start = EPOCH + timedelta(microseconds=last[0])
        position = Cursor("start_time", "asc", start, last[1], "", max_id)


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
    row_limit: int | None = None,
    plan: Windows | None = None,
    read=_rows,
) -> Iterator[list]:
    """Every matching span's `columns`, oldest first (by start time, then id, as the keyset
    pages), in pages of exactly `page_size` rows but the last: each row its start time (in
    microseconds) and id, then the `columns` (`KEYS` to skip). Each read
    holds up to `read_rows` spans (at least a page, at most the row limit): fewer, larger
    reads cost less per row. `plan`: the job's `windows` when the
    caller took them already (for its progress), else found here. With `row_limit`, the
    windows of the first `max(row_limit, K)` copies (`windows`); should they hold fewer spans
    (copies of racing writers, a filter the copies do not decide), the windows after them are
    found the same way, for the rows still wanted; reading stops once `row_limit` rows are
    read (the last page may hold more: the worker cuts at the limit). `read`: how a read's
    rows are fetched (`_reads`); the pages hold what it gives."""
    where = pinned_conditions(engine, spec, as_of, max_id)
    read_rows = max(page_size, read_rows)
    plan = plan or windows(engine, scope, where, read_rows, row_limit)
    # a job of few rows reads no more lines than it may write (its windows stay as wide:
    # narrower ones cost a statement each under a narrow filter)
    each = read_rows if row_limit is None else max(1, min(read_rows, row_limit))
    held: list[tuple] = []
    taken = 0
    lower: datetime | None = None  # each window is (lower, upper]
    while True:
        for upper in plan.ends:
            reads = _reads(engine, scope, where, columns, lower, upper, each, max_id, read)
            for got in reads:
                held.extend(got)
                taken += len(got)
                while len(held) >= page_size:
                    yield held[:page_size]
                    held = held[page_size:]
                if row_limit is not None and taken >= row_limit:
                    break  # the window's later reads would only be cut
            lower = upper
            if row_limit is not None and taken >= row_limit:
                break
        if not plan.open_end or row_limit is None or taken >= row_limit:
            break
        after_lower = [*where, _start > _literal_time(lower)]
        plan = windows(engine, scope, after_lower, read_rows, row_limit - taken)
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
    row_limit: int | None = None,
    plan: Windows | None = None,
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
        row_limit=row_limit,
        plan=plan,
    ):
        yield [dict(zip(fields, row[KEYS:], strict=True)) for row in page]


def job_windows(
    engine: Engine,
    scope: Scope,
    spec: FilterSpec,
    *,
    as_of: datetime,
    max_id: int,
    page_size: int,
    read_rows: int,
    row_limit: int,
) -> Windows:
    """The export job's windows (`windows`), taken before its pages so its progress has a
    total: their `matching`, at least the job's rows (the file's own count is the rows written)."""
    require_filters(scope, spec)
    where = pinned_conditions(engine, spec, as_of, max_id)
    return windows(engine, scope, where, max(page_size, read_rows), row_limit)


def window_pages(
    engine: Engine,
    scope: Scope,
    spec: FilterSpec,
    fields: tuple[str, ...],
    *,
    text_plan: TextPlan | None,
    zone: Zone | None,
    pinned: dict,
    page_size: int,
    read_rows: int,
    row_limit: int,
    plan: Windows,
) -> Iterator[tuple]:
    """The worker's (row count, write function) per page on the span store: text written
    by the engine with `text_plan` (CSV's `span_store_csv`, JSON's `span_store_json`), else
    rows for the writers."""
    reading = {
        "page_size": page_size,
        "read_rows": read_rows,
        "row_limit": row_limit,
        "plan": plan,
        **pinned,
    }
    if text_plan is None:
        rows = row_pages(engine, scope, spec, fields=fields, **reading)
        yield from _writes(rows, lambda w, page: w.write_rows(with_local(page, zone, fields)))
        return
    require_filters(scope, spec)
    require_fields(scope, fields, "export")
    pages = store_pages(engine, scope, spec, text_plan.columns, read=text_plan.read, **reading)
    yield from _writes(pages, text_plan.write)


@dataclass(frozen=True)
class TextPlan:
    """The columns a page reads and what its writer is given from `store_pages`' rows: lines
    of text made by the engine (`write_lines`), CSV's bytes (`write_bytes`), or Parquet's
    table of the page's columns. `read`: how a read's rows are fetched (`_reads`);
    `reads_lines`: they come as one column of bytes, no value per row (the worker's larger
    reads, `WorkerConfig.span_store_line_rows`)."""

    columns: list
    lines: Callable[[list], object]
    method: str = "write_lines"
    read: Callable = _rows
    reads_lines: bool = False

    def write(self, writer, page: list) -> None:
        getattr(writer, self.method)(self.lines(page))


def _writes(pages: Iterator[list], write) -> Iterator[tuple]:
    """(row count, write function) per page: the function writes the page's first n rows; the
    pages are closed when the worker stops early (no connection is held between reads)."""
    try:
        for page in pages:
            yield len(page), lambda writer, n, page=page: write(writer, page[:n])
    finally:
        pages.close()
