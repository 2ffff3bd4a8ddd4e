"""The first reads on the span store: a scoped span list, newest first in keyset pages, and the
totals of the same filter, written by hand (docs/span-store-internals.md). The explorer reads the
store through the query builders instead (storage/stores/clickhouse.py: `spans` the stored table, no
copy picked); this module is kept as the hand-written reads to compare them with.

Every read takes a `Scope` first, and the org (and the scope's projects) go into the WHERE
clause here, so no caller can leave them out; a time window bounds it; a page holds at most
`MAX_PAGE` rows; the engine stops a read past its time budget.

Each span is one stored row since schema version 7 (docs/span-store-internals.md, "Each span once"):
a span sent twice is stored once by the writer (`writes.py`), and the copies two processes racing
before the write turns left are deleted by the fold (`fold_copies.py`). These reads still allow for
a second row, without `FINAL` (slower than needed, not wrong: docs/scale.md, "Known gaps"): the list
reads a prefix in key order, identity last, so a span's copies sort next to each other and the first
of each is kept (the engine's top-n, `ORDER BY ... LIMIT n`); the totals sum one row per span with
`LIMIT 1 BY trace_id, span_id`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from observatory_core.base.errors import (
    PermissionDenied,
    QueryTooLarge,
    QueryTooSlow,
    UserError,
)
from observatory_core.semantic.duplicates import counted
from observatory_core.semantic.field_lookups import fields_hidden_from
from observatory_core.storage import budget
from observatory_core.storage.clickhouse import layout
from observatory_core.storage.clickhouse.cluster import READ_SETTINGS
from observatory_core.storage.clickhouse.connect import READ_SECONDS, SpanStore
from observatory_core.storage.clickhouse.layout import micro_text
from observatory_core.storage.schema import spans

if TYPE_CHECKING:
    from observatory_core.accounts.scope import Scope

MAX_PAGE = 1000  # as the explorer's lists (traces/query.py)
# The most rows one page reads to find its spans among their copies, should racing writers have
# left any (a page of copies of copies ends short rather than read on).
MAX_FETCH = MAX_PAGE * 16
MAX_WINDOW = timedelta(days=400)
# What a list row carries unless the caller names columns: the explorer's columns, no bodies.
LIST_COLUMNS = (
    "org_id",
    "project_id",
    "trace_id",
    "span_id",
    "parent_span_id",
    "start_time",
    "end_time",
    "duration_ms",
    "name",
    "operation",
    "provider",
    "model",
    "environment",
    "status",
    "user_id",
    "session_id",
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "total_cost_usd",
    "tags",
)
_TIMEOUT = 159  # ClickHouse's TIMEOUT_EXCEEDED


@dataclass(frozen=True)
class Window:
    """[start, end): the spans that started in it. Both ends aware; at most `MAX_WINDOW`."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise UserError("A time window needs times with a time zone (UTC or an offset).")
        if not self.start < self.end:
            raise UserError(
                f"The window's start ({self.start.isoformat()}) must be before its end "
                f"({self.end.isoformat()})."
            )
        if self.end - self.start > MAX_WINDOW:
            raise UserError(f"A time window may span at most {MAX_WINDOW.days} days; narrow it.")


@dataclass(frozen=True)
class After:
    """Where a page ended: the last row's start time and identity (the keyset)."""

    start_time: datetime
    trace_id: str
    span_id: str


@dataclass(frozen=True)
class SpanPage:
    rows: list[dict[str, Any]]
    next: After | None  # None: this was the last page


@dataclass(frozen=True)
class SpanTotals:
    spans: int
    tokens: int
    cost_usd: float | None  # None: the role may not see costs


def _where(scope: Scope, window: Window) -> tuple[list[str], dict[str, Any]]:
    """The scope's org and projects and the window, as conditions and bound parameters."""
    org_id = scope.org_id
    if isinstance(org_id, bool) or not isinstance(org_id, int):
        raise TypeError(f"scope.org_id must be an org's id, got {org_id!r}")
    conditions = [
        "org_id = {org:Int32}",
        "start_time >= {start:DateTime64(6, 'UTC')}",
        "start_time < {end:DateTime64(6, 'UTC')}",
    ]
    params: dict[str, Any] = {
        "org": org_id,
        "start": micro_text(window.start),
        "end": micro_text(window.end),
    }
    if scope.project_ids is not None:
        conditions.append("project_id IN {projects:Array(Int32)}")
        params["projects"] = sorted(int(p) for p in scope.project_ids)
    return conditions, params


# What one read may hold in memory; on chDB that memory is the app server's own. A grouping
# or a sort past half of it spills to disk instead of failing; `LIMIT 1 BY`'s set of span ids
# cannot (at 10M spans a 30-day page's newest-copy pick needed 2.35 GiB and was refused, before
# schema version 7; the builders' reads pick no copy since, fold_copies.py).
READ_MEMORY = 2 * 1024**3


def over_read_memory(exc: BaseException) -> bool:
    """The read passed its own memory bound (`READ_MEMORY`): narrowing it is the answer. Not
    the server's or a user's total (code 241 too: other reads hold the memory; a retry may
    pass, so that stays a transient failure)."""
    text = str(exc)
    return ("Code: 241." in text or "MEMORY_LIMIT_EXCEEDED" in text) and (
        "Query memory limit exceeded" in text or "(for query)" in text
    )


def _settings(store: SpanStore) -> dict[str, Any]:
    left = budget.remaining()
    seconds = READ_SECONDS if left is None else max(1, int(left + 0.999))
    return {
        "max_execution_time": seconds,
        "timeout_overflow_mode": "throw",
        "max_memory_usage": READ_MEMORY,
        "max_bytes_before_external_group_by": READ_MEMORY // 2,
        "max_bytes_before_external_sort": READ_MEMORY // 2,
        **store.naming.settings(READ_SETTINGS),  # on a cluster: `cluster.READ_SETTINGS`
    }


def _query(store: SpanStore, sql: str, params: dict[str, Any]):
    from clickhouse_connect.driver.exceptions import DatabaseError

    settings = _settings(store)
    try:
        return store.client.query(sql, parameters=params, settings=settings)
    except DatabaseError as exc:
        if f"Code: {_TIMEOUT}." in str(exc) or "TIMEOUT_EXCEEDED" in str(exc):
            raise QueryTooSlow(budget.too_slow_message(settings["max_execution_time"])) from None
        if over_read_memory(exc):
            raise QueryTooLarge(budget.too_large_message()) from None
        raise


def _row(names: tuple[str, ...], values: tuple) -> dict[str, Any]:
    row = dict(zip(names, values, strict=True))
    for name, value in row.items():
        if isinstance(value, datetime) and value.tzinfo is None:
            row[name] = value.replace(tzinfo=UTC)  # the engine answers UTC without the zone
        elif name in layout.JSON_TEXT and isinstance(value, str):
            row[name] = json.loads(value)
    return row


def _first_rows(
    store: SpanStore, select: str, params: dict[str, Any], names: tuple[str, ...], wanted: int
) -> list[dict[str, Any]]:
    """The first `wanted` spans of `select` (ordered by identity, then version), one row each.

    The copies of a span (racing writers', until the fold) sort next to each other, so one
    row per span of the first rows is the first spans: the engine keeps just the top rows as
    it reads (`LIMIT n`), where `LIMIT 1 BY` sorts the whole window first (measured:
    docs/benchmarks.md). A prefix that copies shortened is read again, four times longer."""
    fetch = wanted * 2
    while True:
        result = _query(store, select + str(fetch), params)
        rows: list[dict[str, Any]] = []
        seen: tuple | None = None
        for values in result.result_rows:
            identity = values[names.index("trace_id")], values[names.index("span_id")]
            if identity != seen:
                rows.append(_row(names, values[: len(names)]))
                seen = identity
        if len(rows) >= wanted or len(result.result_rows) < fetch or fetch >= MAX_FETCH:
            return rows[:wanted]
        fetch = min(fetch * 4, MAX_FETCH)


def _visible(scope: Scope, columns: tuple[str, ...], *, named: bool) -> tuple[str, ...]:
    """The columns the scope's role may see (docs/architecture.md, "Visibility"): a hidden
    one the caller named is refused, one left to the default is left out."""
    hidden = fields_hidden_from(scope.role)
    refused = [c for c in columns if c in hidden]
    if refused and named:
        raise PermissionDenied(
            f"Your role cannot see {', '.join(refused)}; remove {'it' if len(refused) == 1 else 'them'}."
        )
    return tuple(c for c in columns if c not in hidden)


def list_spans(
    store: SpanStore,
    scope: Scope,
    window: Window,
    *,
    after: After | None = None,
    limit: int = 50,
    columns: tuple[str, ...] = LIST_COLUMNS,
) -> SpanPage:
    """The scope's spans that started in `window`, newest first (ties by trace and span id,
    descending), one page of at most `limit` after the keyset `after`."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
        raise UserError(f"Page size must be a whole number from 1 to {MAX_PAGE}, got {limit!r}.")
    known = set(layout.span_column_names())
    unknown = [c for c in columns if c not in known]
    if unknown:
        raise UserError(
            f"No span column {', '.join(map(repr, unknown))}; choose from {', '.join(sorted(known))}."
        )
    columns = _visible(scope, columns, named=columns is not LIST_COLUMNS)
    names = tuple(dict.fromkeys((*columns, "start_time", "trace_id", "span_id")))
    conditions, params = _where(scope, window)
    if after is not None:
        # the plain bound lets the primary key skip what is newer; the tuple breaks ties
        conditions.append("start_time <= {at:DateTime64(6, 'UTC')}")
        conditions.append(
            "(start_time, trace_id, span_id) < "
            "({at:DateTime64(6, 'UTC')}, {at_trace:String}, {at_span:String})"
        )
        params.update(
            at=micro_text(after.start_time), at_trace=after.trace_id, at_span=after.span_id
        )
    select = (
        f"SELECT {', '.join(f'`{n}`' for n in (*names, layout.VERSION))} "
        f"FROM {store.table('spans')} WHERE {' AND '.join(conditions)} "
        "ORDER BY start_time DESC, trace_id DESC, span_id DESC, version DESC LIMIT "
    )
    rows = _first_rows(store, select, params, names, limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    last = rows[-1] if rows else None
    following = (
        After(last["start_time"], last["trace_id"], last["span_id"]) if more and last else None
    )
    wanted = set(columns)
    return SpanPage([{k: v for k, v in r.items() if k in wanted} for r in rows], following)


def span_totals(store: SpanStore, scope: Scope, window: Window) -> SpanTotals:
    """How many spans of the scope started in `window`, and their tokens and cost: each span
    once however often it was written."""
    conditions, params = _where(scope, window)
    conditions.append(layout.sql(counted(spans.c)))  # a twin set aside counts nowhere
    sql = (
        "SELECT count(), sum(toInt64(total_tokens)), sum(total_cost_usd) FROM ("
        f"SELECT total_tokens, total_cost_usd FROM {store.table('spans')} "
        f"WHERE {' AND '.join(conditions)} LIMIT 1 BY trace_id, span_id)"
    )
    ((count, tokens, cost),) = _query(store, sql, params).result_rows
    cost_usd = None if "total_cost_usd" in fields_hidden_from(scope.role) else float(cost or 0.0)
    return SpanTotals(int(count), int(tokens or 0), cost_usd)
