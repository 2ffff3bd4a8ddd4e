"""What an insert whose views failed part-way left out of the rollups and trace totals, put
back when its spans are sent again (docs/span-store-internals.md, "View gaps"); and the hours' users
and sessions (`rollup_actors_1hour`, a set: `_top_up_actors`).

The engine writes an insert's spans first and then runs the views one after another: a view
that fails leaves the spans stored and the views after it without them (seen on chDB: the
spans' part and the views before the failing one kept, the rest not). The retry finds the
spans stored and skips them, so without this they would count too few for good.

So when a batch holds spans already stored, the writer (under the org's write turn, after it
inserted the batch's new spans, whose views have then run) compares, for the days and the
traces those stored spans fall in, the counted spans with what the views hold: `span_count`
per minute, hour and day bucket of those days (one count per grain) and per trace (read by the
key's prefix, org and project, and the spans within the traces' known extent; the newest copy
of each span, as remap rebuilds a trace before it deletes its spans' older copies:
`_trace_source`). Where the
spans hold more, the difference is inserted: for each key, the spans' partials (the views' own
expressions) less what the row holds for the sums and the bins, the spans' own values for the
minimums and maximums (folding them again changes nothing). Grains go finest first, each over
the whole days: a minute's difference reaches the hour and the day through their views, so an
hour is only topped up once all its minutes are whole, when its own view was the one that
failed.

A bucket or trace holding a span written within `SETTLE` is not judged, and nothing is while
the server lists an insert into the spans as running: that insert may still be running its
views after its client gave up (and the writer's turn was released), and a top-up would count
its spans twice when they finish. Not on a cluster (`fill_gaps` returns there; docs/scale.md, "Known
gaps").

Where the views hold more than the spans (copies racing writers left before the write turn,
spans the TTL deleted: the rollups and trace totals have none), nothing is taken out: a key is
topped up only when every count its row holds (spans, errors, each value's count, tokens) and
every latency bin is at most what its spans give. A missing span hidden behind such a surplus
in the same bucket or key is not found.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from observatory_core.storage.clickhouse import layout, rollup_select
from observatory_core.storage.clickhouse.connect import SpanStore
from observatory_core.storage.clickhouse.ddl import ACTORS, _counted_spans, actors_select
from observatory_core.storage.clickhouse.layout import micro_text

# An insert whose client gave up (`connect.py`: 60 s per statement; a lost connection, "unknown
# status of insert") may still be running on the server: its spans' part is visible, its views'
# rows not yet. Topping those spans up would count them twice once the views finish, so a
# bucket or trace holding a span written less than this ago is not judged; a later resend
# does it. Far longer than any insert of a batch runs (seconds; `writes.BATCH` rows).
SETTLE = timedelta(minutes=10)


# The server stops each of the filler's statements well before the client's 60 s, so none goes
# on running after the writer gave up and let go of the turn.
_LIMIT = {"max_execution_time": 30}
# The spans of a bucket or trace written within `SETTLE`, other than by the caller's own insert.
_YOUNG = f"countIf({layout.VERSION} >= %(settled)s AND {layout.VERSION} != %(own)s)"


def _young(own: int) -> dict[str, int]:
    """`_YOUNG`'s parameters: under `settled` (microseconds since the epoch) every write
    but `own` has finished."""
    settled = int((datetime.now(UTC) - SETTLE).timestamp() * 1_000_000)
    return {"settled": settled, "own": own}


def _epoch(value: datetime) -> int:
    """Seconds since the epoch; a time the driver hands back without a zone is UTC (the
    column's), not the server's local time."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return int(value.timestamp())


def _difference(column: layout.ChColumn) -> str:
    """The value to insert so that the row, merged with it, holds what the spans give."""
    name = column.name
    if column.type == layout.BINS_TYPE:
        return f"mapSubtract(s.{name}, r.{name})"
    function = column.type.removeprefix("SimpleAggregateFunction(").split(",")[0]
    if function == "sum":
        return f"s.{name} - r.{name}"
    if function in ("min", "max"):
        return f"s.{name}"
    raise TypeError(f"{name}: no difference for {column.type}; add one in view_gaps.py")


def _counts(partials: tuple[layout.Partial, ...]) -> list[str]:
    """The integer sums (span, error and value counts, tokens): a float sum may differ by its
    rounding, and a difference below zero there wraps nothing."""
    return [
        p.column.name
        for p in partials
        if p.column.type.startswith("SimpleAggregateFunction(sum,") and "Float" not in p.column.type
    ]


def newest_spans(store: SpanStore, texts: list[str], where: str) -> str:
    """The spans `where` picks (the table named `spans` there), the newest copy of each
    (`LIMIT 1 BY`), as a subquery named `spans` of the columns `texts` name as `spans.x`,
    with the identity and version: a span remap has rewritten holds its older copy until its
    day's flush (`rewrite_spans.py`), which no figure counts once its trace is rebuilt."""
    named = {m for t in [*texts, where] for m in re.findall(r"spans`?\.`?(\w+)", t)}
    named |= {"org_id", "project_id", "trace_id", "span_id", "start_time", layout.VERSION}
    columns = sorted(named & set(layout.span_column_names()))
    return (
        f"(SELECT {', '.join(f'`{c}`' for c in columns)} FROM {store.table('spans')} AS spans "
        f"WHERE {where} ORDER BY {layout.VERSION} DESC LIMIT 1 BY org_id, trace_id, span_id) AS spans"
    )


def _insert(
    store: SpanStore,
    table: str,
    keys: list[tuple[str, str]],
    partials: tuple[layout.Partial, ...],
    spans_where: str,
    rows_where: str,
    source: str | None = None,
) -> str:
    """INSERT the difference rows of `table` (keys: (name, expression over spans)), from the
    spans `spans_where` picks in `source` (the table itself when None)."""
    names = [n for n, _ in keys]
    made = ", ".join(
        [f"{e} AS {n}" for n, e in keys] + [f"{p.select} AS {p.column.name}" for p in partials]
    )
    have = ", ".join(names + [f"{layout.merged(p.column)} AS {p.column.name}" for p in partials])
    on = " AND ".join(f"s.{n} = r.{n}" for n in names)
    values = [f"s.{n}" for n in names] + [_difference(p.column) for p in partials]
    bins = [p.column.name for p in partials if p.column.type == layout.BINS_TYPE]
    # only a row the spans cover: every count and bin it holds at most what the spans give, so
    # nothing is taken out (and no UInt64 difference wraps round below zero)
    covered = "".join(f" AND arrayAll(k -> s.{b}[k] >= r.{b}[k], mapKeys(r.{b}))" for b in bins)
    covered += "".join(f" AND s.{n} >= r.{n}" for n in _counts(partials))
    columns = ", ".join(names + [p.column.name for p in partials])
    return (
        f"INSERT INTO {store.table(table)} ({columns})\n"
        f"SELECT {', '.join(values)}\n"
        f"FROM (SELECT {made} FROM {source or store.table('spans') + ' AS spans'}\n"
        f"      WHERE {spans_where} AND {_counted_spans()} GROUP BY {', '.join(names)}) AS s\n"
        f"LEFT JOIN (SELECT {have} FROM {store.table(table)} AS rows\n"
        f"      WHERE {rows_where} GROUP BY {', '.join(names)}) AS r ON {on}\n"
        f"WHERE s.span_count > r.span_count{covered}"
    )


def _rollup_statement(store: SpanStore, grain: str) -> str:
    seconds = layout.GRAIN_SECONDS[grain]
    keys = list(rollup_select.keys(grain))  # the minute view's key, at `grain`'s bucket
    in_buckets = (
        "spans.org_id = %(org)s AND spans.start_time >= toDateTime64(%(lo)s, 6, 'UTC') "
        "AND spans.start_time < toDateTime64(%(hi)s, 6, 'UTC') "
        f"AND toUnixTimestamp(toStartOfInterval(spans.start_time, INTERVAL {seconds} SECOND, "
        "'UTC')) IN %(buckets)s"
    )
    rows = (
        "org_id = %(org)s AND bucket_start >= toDateTime64(%(lo)s, 6, 'UTC') "
        "AND bucket_start < toDateTime64(%(hi)s, 6, 'UTC') "
        "AND toUnixTimestamp(bucket_start) IN %(buckets)s"
    )
    return _insert(store, f"rollup_{grain}", keys, rollup_select.partials(), in_buckets, rows)


# A trace's spans and rows: by the key's prefix (org, project), and the spans within the
# traces' known extent (`_extent`), so the cost follows the batch, not the org's history.
_TRACE_SPANS = (
    "spans.org_id = %(org)s AND spans.project_id IN %(projects)s "
    "AND spans.start_time >= toDateTime64(%(first)s, 6, 'UTC') "
    "AND spans.start_time <= toDateTime64(%(last)s, 6, 'UTC') AND spans.trace_id IN %(traces)s"
)
_TRACE_ROWS = "org_id = %(org)s AND project_id IN %(projects)s AND trace_id IN %(traces)s"


def _trace_source(store: SpanStore) -> str:
    """The traces' spans (`_TRACE_SPANS`), the newest copy of each: remap rebuilds a trace's
    totals from its newest copies before it deletes the older ones (`rewrite_spans.py`), so a
    count of rows there would find the trace short and count its rewritten spans twice."""
    partials = layout.trace_total_partials()
    return newest_spans(store, [p.select for p in partials] + [_counted_spans()], _TRACE_SPANS)


def _trace_statement(store: SpanStore) -> str:
    keys = [("org_id", "spans.org_id"), ("project_id", "spans.project_id")]
    keys.append(("trace_id", "spans.trace_id"))
    partials = layout.trace_total_partials()
    return _insert(
        store, "trace_totals", keys, partials, "1", _TRACE_ROWS, source=_trace_source(store)
    )


def _extent(store: SpanStore, params: dict[str, Any], starts: list[datetime]) -> tuple[str, str]:
    """The first and last start of the traces: what their rows hold (every span the view
    counted) and the resent spans' own starts. A span of theirs the views missed outside it,
    and not in this batch, is judged when it is itself sent again."""
    ((first, last),) = store.client.query(
        f"SELECT min(first_start), max(last_start) FROM {store.table('trace_totals')} "
        f"WHERE {_TRACE_ROWS}",
        parameters=params,
        settings={**_LIMIT, "max_query_size": 8192 + 80 * len(params["traces"])},
    ).result_rows
    known = [_utc(t) for t in (first, last) if t is not None and _epoch(t) > 0] + starts
    return micro_text(min(known)), micro_text(max(known))


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


_DAY = layout.GRAIN_SECONDS["1day"]


def _short(
    store: SpanStore, grain: str, org_id: int, days: list[int], lo, hi, own: int
) -> list[int]:
    """The `grain` buckets of `days` whose rollup rows count fewer spans than the spans table
    holds (every bucket of those days, not only those the resent spans fall in: a minute
    left short elsewhere in an hour must be topped up before the hour is judged)."""
    seconds = layout.GRAIN_SECONDS[grain]
    bucket = f"toUnixTimestamp(toStartOfInterval(start_time, INTERVAL {seconds} SECOND, 'UTC'))"
    day = f"toUnixTimestamp(toStartOfInterval(start_time, INTERVAL {_DAY} SECOND, 'UTC'))"
    row_day = f"toUnixTimestamp(toStartOfInterval(bucket_start, INTERVAL {_DAY} SECOND, 'UTC'))"
    params = {"org": org_id, "days": days, "lo": lo, "hi": hi, **_young(own)}
    result = store.client.query(
        f"SELECT s.b FROM (SELECT {bucket} AS b, count() AS n, {_YOUNG} AS young "
        f"FROM {store.table('spans')} "
        "WHERE org_id = %(org)s AND start_time >= toDateTime64(%(lo)s, 6, 'UTC') "
        f"AND start_time < toDateTime64(%(hi)s, 6, 'UTC') AND {_counted_spans()} "
        f"AND {day} IN %(days)s GROUP BY b) AS s LEFT JOIN (SELECT toUnixTimestamp(bucket_start) "
        f"AS b, sum(span_count) AS n FROM {store.table(f'rollup_{grain}')} "
        "WHERE org_id = %(org)s AND bucket_start >= toDateTime64(%(lo)s, 6, 'UTC') "
        f"AND bucket_start < toDateTime64(%(hi)s, 6, 'UTC') AND {row_day} IN %(days)s "
        "GROUP BY b) AS r ON s.b = r.b WHERE s.n > r.n AND s.young = 0",
        parameters=params,
        settings=_LIMIT,
    )
    return sorted(int(b) for (b,) in result.result_rows)


def insert_running(store: SpanStore, table: str = "spans") -> bool:
    """Whether the server is still running an insert into `table` (another writer's, or one
    whose client gave up): besides `SETTLE`, a check that costs one look at its processes
    (`wrapper_moves.py` makes it too, before it judges a rollup insert it sent)."""
    ((running,),) = store.client.query(
        "SELECT count() FROM system.processes WHERE query_kind = 'Insert' "
        "AND positionCaseInsensitive(query, %(table)s) > 0",
        parameters={"table": f"INSERT INTO {store.table(table)}"},
        settings=_LIMIT,
    ).result_rows
    return running > 0


_HOUR = layout.GRAIN_SECONDS["1hour"]
# The org's counted spans of the resent spans' hours (within [lo, hi), the resent days).
_ACTOR_SPANS = (
    " AND spans.org_id = %(org)s AND spans.start_time >= toDateTime64(%(lo)s, 6, 'UTC') "
    "AND spans.start_time < toDateTime64(%(hi)s, 6, 'UTC') AND toUnixTimestamp("
    f"toStartOfInterval(spans.start_time, INTERVAL {_HOUR} SECOND, 'UTC')) IN %(hours)s"
)


def _top_up_actors(store: SpanStore, org_id: int, hours: list[int], lo: str, hi: str) -> None:
    """The users and sessions of the resent spans' hours that `rollup_actors_1hour` lacks (its
    view failed part-way). A set read with DISTINCT (`rollups/actors.py`): a row it holds
    already, or one a view still running inserts again, changes no count, and no hour waits
    for another (no cascade, unlike the rollups); only the rows it lacks are inserted, so a
    whole hour writes no part. It runs where `fill_gaps` runs: the writer hands it only stored
    spans older than `SETTLE`, and nothing runs while an insert into the spans does, so a
    resend within 10 minutes of the failure leaves the hours short, as it leaves the rollups.
    Bounded by the resent hours (`lo`, `hi`), which the table's key reads by."""
    table = store.table(ACTORS)
    key = "org_id, bucket_start, project_id, kind, actor"
    store.client.command(
        f"INSERT INTO {table} ({key})\nSELECT {key} FROM (\n"
        f"{actors_select(store.table('spans'), _ACTOR_SPANS)}\n) AS s\n"
        f"WHERE ({key}) NOT IN (SELECT {key} FROM {table} WHERE org_id = %(org)s "
        "AND bucket_start >= toDateTime64(%(lo)s, 6, 'UTC') "
        "AND bucket_start < toDateTime64(%(hi)s, 6, 'UTC') "
        "AND toUnixTimestamp(bucket_start) IN %(hours)s)",
        parameters={"org": org_id, "hours": hours, "lo": lo, "hi": hi},
        settings={**_LIMIT, "max_query_size": 65536 + 24 * len(hours)},
    )


def fill_gaps(
    store: SpanStore, org_id: int, found: Iterable[tuple[int, str, datetime]], *, own: int = 0
) -> int:
    """Top up the views' rows of the buckets and traces of `found`, (project id, trace id,
    start time) of one org's stored spans a batch sent again (see above); `own`: the version of the
    caller's own insert, finished, whose spans are not waited for. Answers how many buckets
    and traces were short."""
    found = list(found)
    if not found or store.naming.cluster:
        # not on a cluster (yet): an insert into the Distributed rollups has no sharding key to
        # place it by, and a replica that lags would show rows short that are already right;
        # it needs per-shard `_local` inserts computed on each shard (docs/span-store-internals.md)
        return 0
    if insert_running(store):
        return 0  # its views may not have run yet: a later resend judges (`SETTLE`)
    repaired = 0
    days = sorted({_epoch(start) // _DAY * _DAY for _, _, start in found})
    lo = micro_text(datetime.fromtimestamp(days[0], UTC))
    hi = micro_text(datetime.fromtimestamp(days[-1] + _DAY, UTC))
    for grain in layout.GRAIN_SECONDS:  # finest first (see above)
        short = _short(store, grain, org_id, days, lo, hi, own)
        if short:
            params: dict[str, Any] = {"org": org_id, "buckets": short, "lo": lo, "hi": hi}
            store.client.command(
                _rollup_statement(store, grain),
                parameters=params,
                settings={**_LIMIT, "max_query_size": 65536 + 12 * len(short)},
            )
            repaired += len(short)
    traces = sorted({trace for _, trace, _ in found})
    params = {"org": org_id, "projects": sorted({p for p, _, _ in found}), "traces": traces}
    first, last = _extent(store, params, [_utc(start) for _, _, start in found])
    params.update(first=first, last=last)
    result = store.client.query(
        f"SELECT s.t FROM (SELECT spans.trace_id AS t, count() AS n, {_YOUNG} AS young "
        f"FROM {_trace_source(store)} WHERE {_counted_spans()} "
        f"GROUP BY t) AS s LEFT JOIN (SELECT trace_id AS t, sum(span_count) AS n FROM "
        f"{store.table('trace_totals')} WHERE {_TRACE_ROWS} "
        "GROUP BY t) AS r ON s.t = r.t WHERE s.n > r.n AND s.young = 0",
        parameters={**params, **_young(own)},
        settings={**_LIMIT, "max_query_size": 8192 + 80 * len(traces)},
    )
    short_traces = sorted(t for (t,) in result.result_rows)
    if short_traces:
        store.client.command(
            _trace_statement(store),
            parameters={**params, "traces": short_traces},
            settings={**_LIMIT, "max_query_size": 65536 + 80 * len(short_traces)},
        )
        repaired += len(short_traces)
    # last: a failure here (a set, topped up at the next resend) leaves the rest repaired
    hours = sorted({_epoch(start) // _HOUR * _HOUR for _, _, start in found})
    first_hour = micro_text(datetime.fromtimestamp(hours[0], UTC))
    end_hour = micro_text(datetime.fromtimestamp(hours[-1] + _HOUR, UTC))
    _top_up_actors(store, org_id, hours, first_hour, end_hour)
    return repaired
