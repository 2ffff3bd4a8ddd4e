"""The totals of several windows in one statement (the Overview's period and the one before):
on the span store each rollup grain is read once for every window, not once per window, which
saves a statement's fixed cost (docs/span-store-internals.md, "Reports and alerts")."""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import UTC, datetime

import polars as pl
from sqlalchemy.engine import Engine

from observatory_core.accounts.scope import Scope
from observatory_core.metrics.catalog import METRICS, PERCENTILES, Agg
from observatory_core.metrics.engine import (
    MetricResult,
    _check_permissions,
    _window,
    run_metrics,
)
from observatory_core.metrics.query import MetricQuery
from observatory_core.metrics.rollup_bins import merged_bins, without_partial_bins
from observatory_core.metrics.rollup_path import WINDOW, rollup_can_answer, rollup_select_windows
from observatory_core.metrics.rollup_values import finalize
from observatory_core.metrics.series_reads import by_subject, frame_of_statement
from observatory_core.metrics.shaping import keep_rows, typed
from observatory_core.metrics.trace_path import trace_series
from observatory_core.storage.stores import store_for


def run_metric_totals(
    engine: Engine,
    scope: Scope,
    queries: list[MetricQuery],
    *,
    now: datetime | None = None,
) -> list[MetricResult] | None:
    """`run_metrics` of totals queries that differ only in their window (the Overview's period
    and the one before), read in one statement where the store pairs periods and rollups
    answer them all (`rollup_path.rollup_select_windows`: each grain read once, not once per
    window); None where not, for the caller to run each. The same answers as each query's
    `run_metrics`; a window without rows is read alone (its empty totals' row)."""
    started = time.perf_counter()
    now = now or datetime.now(UTC)
    store = store_for(engine)
    first = queries[0]
    series = first.all_series
    specs = [q.filters.pinned(now) for q in queries]
    if (
        not (store.pairs_periods and store.ors_time_ranges)
        or first.group_by
        or first.bucket is not None
        or first.having
        or trace_series(series)
        or len(by_subject(series)) != 1
        or any(replace(q, filters=first.filters) != first for q in queries)
        or any(q.filters.filters() != first.filters.filters() for q in queries)
        or not all(rollup_can_answer(series, (), spec) for spec in specs)
    ):
        return None
    for q in queries:
        _check_permissions(scope, q)
    windows = [_window(engine, scope, q, now) for q in queries]
    ordered = sorted(windows)
    if any(a[1] > b[0] for a, b in zip(ordered, ordered[1:], strict=False)):
        return None  # overlapping windows: a row could not tell its window
    subject = METRICS[series[0].split(".")[0]].subject
    statement, grains, params = rollup_select_windows(
        scope, series, specs[0], windows, subject, bin_maps=store.rollup_bin_maps
    )
    frame = frame_of_statement(engine, statement, params, by_index=True)
    results = []
    for w, (q, (start, end)) in enumerate(zip(queries, windows, strict=True)):
        mine = frame.filter(pl.col(WINDOW) == w).drop(WINDOW)
        if mine.height != 1:  # no rows in the window: its totals as `run_metrics` answers
            results.append(run_metrics(engine, scope, q, now=now))
            continue
        bins = merged_bins(mine)
        finished = finalize(mine, series, (), bins)
        if store.rollup_bin_maps:  # as `series_reads._compute_subject`
            finished, _ = without_partial_bins(mine, finished, series, bins)
        finished = keep_rows(typed(finished, series, ()), q)
        sketch = finished["_bins"].to_numpy()[0] if "_bins" in finished.columns else None
        has_percentiles = any(Agg(s.split(".")[1]) in PERCENTILES for s in q.series)
        results.append(
            MetricResult(
                frame=finished.select(list(q.series)),
                series=q.series,
                group_by=(),
                bucket_seconds=None,
                start=start,
                end=end,
                source="rollup",
                grains=tuple(grains[w]),
                exact_percentiles=False if has_percentiles else None,
                seconds=time.perf_counter() - started,
                sketch=sketch,
                zone=q.zone,
            )
        )
    return results
