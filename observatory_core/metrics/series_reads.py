"""Reading a query's series over its range: one statement per subject (each restricted to
its subject's rows, on the path the planner chose), joined on bucket and group; and the rows of
any statement as a frame, read as the engine reads its own answers."""

from __future__ import annotations

from datetime import datetime

import polars as pl
from sqlalchemy.engine import Engine

from observatory_core.accounts.scope import Scope
from observatory_core.base.zones import Bucketing
from observatory_core.metrics.catalog import METRICS, Subject
from observatory_core.metrics.folding import FOLD_KEYS
from observatory_core.metrics.frames import frame_of
from observatory_core.metrics.query import MetricQuery
from observatory_core.metrics.raw import raw_select
from observatory_core.metrics.rollup_bins import merged_bins, without_partial_bins
from observatory_core.metrics.rollup_path import rollup_can_answer, rollup_select
from observatory_core.metrics.rollup_values import finalize
from observatory_core.metrics.shaping import typed
from observatory_core.metrics.trace_path import trace_plan, trace_series
from observatory_core.storage.stores import store_for

# what every read of one query takes: (engine, scope, query, its series)
ReadArgs = tuple[Engine, Scope, MetricQuery, tuple[str, ...]]


class TooManyRows(Exception):
    """A fetch passed its row cap (more groups than one answer may hold)."""


def frame_of_statement(
    engine: Engine,
    statement,
    params: dict | None = None,
    *,
    by_index: bool = False,
    max_rows: int | None = None,
) -> pl.DataFrame:
    """A statement's rows as a frame, read as the engine reads its own answers (the store's
    read settings, the driver's tuples; `max_rows`: `TooManyRows` past it); the alert
    cycle's shared windows read theirs through it too (`alerts/shared_windows.py`)."""
    with engine.connect().execution_options(binary_results=True) as conn:
        store_for(conn).tune_read(conn, by_index=by_index)
        result = conn.execute(statement, params or {})
        columns = list(result.keys())
        # the driver's own tuples: SQLAlchemy's rows cost ~1.5 us each (93 ms of a 60k-row
        # answer), and polars types the columns itself
        fetch = result.cursor
        if max_rows is None:
            rows = fetch.fetchall()
        else:
            rows = []
            while chunk := fetch.fetchmany(10_000):
                rows += chunk
                if len(rows) > max_rows:
                    raise TooManyRows
    return frame_of(columns, rows)


def by_subject(series: tuple[str, ...]) -> dict[Subject, tuple[str, ...]]:
    """The series grouped by their metrics' subject, in the order asked."""
    out: dict[Subject, tuple[str, ...]] = {}
    for s in series:
        subject = METRICS[s.split(".")[0]].subject
        out[subject] = (*out.get(subject, ()), s)
    return out


def compute(
    engine: Engine,
    scope: Scope,
    query: MetricQuery,
    series: tuple[str, ...],
    buckets: Bucketing | None,
    start: datetime,
    end: datetime,
    now: datetime,
    force: str | None,
    *,
    keep: list[str] | None = None,
    max_rows: int | None = None,
) -> tuple[pl.DataFrame, str, tuple[str, ...]]:
    """`buckets`: the range's buckets on the query zone's clock (None: totals). `keep`: the group keys to keep, every other group folded into "(other)". One statement
    per subject (each restricted to its subject's rows), joined on bucket and group; from
    rollups only when they can answer every series (one source, as before subjects)."""
    if trace_series(series):  # over traces, one query for them: metrics/trace_path.py
        fold = keep is not None
        statement, source, grains = trace_plan(
            scope,
            series,
            query.group_by,
            query.filters.pinned(now),
            now,
            store_for(engine).name,
            buckets.seconds if buckets else None,
            start,
            end,
            fold=fold,
            force=force,
            bucketing=buckets,
        )
        extra = {FOLD_KEYS: keep} if fold else {}
        return frame_of_statement(engine, statement, extra, max_rows=max_rows), source, grains
    parts = by_subject(series)
    can = rollup_can_answer(series, query.group_by, query.filters.pinned(now))
    if force == "rollup" and not can:  # never a figure that silently drops part of the filter
        raise ValueError("Rollups cannot answer this query; force='rollup' does not apply.")
    force = force or ("rollup" if can else "raw")
    results = [
        _compute_subject(
            engine,
            scope,
            query,
            subject,
            mine,
            buckets,
            start,
            end,
            now,
            force,
            keep=keep,
            max_rows=max_rows,
        )
        for subject, mine in parts.items()
    ]
    if len(results) == 1:
        return results[0]
    pairs = zip(results, parts.values(), strict=True)
    frames = [typed(f, mine, query.group_by) for (f, _, _), mine in pairs]
    sources = [source for _, source, _ in results]
    grains = [grain for _, _, used in results for grain in used]
    keys = [c for c in ("bucket", *query.group_by) if c in frames[0].columns]
    frame = frames[0]
    for other in frames[1:]:
        other = other.drop([c for c in other.columns if c == "_bins" and c in frame.columns])
        if keys:
            frame = frame.join(other, on=keys, how="full", coalesce=True, nulls_equal=True)
        else:
            frame = pl.concat([frame, other], how="horizontal")
    if max_rows is not None and frame.height > max_rows:
        raise TooManyRows
    source = "rollup" if set(sources) == {"rollup"} else "raw"
    return frame, source, tuple(dict.fromkeys(grains))


def _compute_subject(
    engine: Engine,
    scope: Scope,
    query: MetricQuery,
    subject: Subject,
    series: tuple[str, ...],
    buckets: Bucketing | None,
    start: datetime,
    end: datetime,
    now: datetime,
    force: str | None,
    *,
    keep: list[str] | None = None,
    max_rows: int | None = None,
) -> tuple[pl.DataFrame, str, tuple[str, ...]]:
    """`force`: "rollup" or "raw", as `compute` decided for the whole query."""
    spec = query.filters.pinned(now)
    dialect = store_for(engine).name
    use_rollup = force == "rollup"
    fold = keep is not None
    extra = {FOLD_KEYS: keep} if fold else {}
    bucket_seconds = buckets.seconds if buckets else None
    if use_rollup:
        statement, grains, params = rollup_select(
            scope,
            series,
            query.group_by,
            spec,
            bucket_seconds,
            start,
            end,
            fold,
            subject,
            bucketing=buckets,
            bin_maps=store_for(engine).rollup_bin_maps,
            or_ranges=store_for(engine).ors_time_ranges,
            drop_empty=store_for(engine).rollups_cancel_out,
        )
        frame = frame_of_statement(
            engine, statement, {**params, **extra}, by_index=True, max_rows=max_rows
        )
        bins = merged_bins(frame)  # decoded once, for the values and the check below
        finished = finalize(frame, series, query.group_by, bins)
        if store_for(engine).rollup_bin_maps:
            # rollup rows from before the span store kept latency bins
            # (docs/span-store-internals.md, "Metrics on rollups"): their percentiles left empty,
            # never computed from part of their spans; their counts and sums stand
            finished, _ = without_partial_bins(frame, finished, series, bins)
        return finished, "rollup", tuple(grains)
    statement = raw_select(
        scope,
        series,
        query.group_by,
        spec,
        now,
        dialect,
        bucket_seconds,
        fold,
        subject,
        bucketing=buckets,
    )
    return frame_of_statement(engine, statement, extra, max_rows=max_rows), "raw", ()
