"""`run_metrics`: run the series (planned rollup or raw in `series_reads.py`), complete the
buckets, apply having/sort/limit.

Every result says where it came from and whether its percentiles are exact. The reads are
`series_reads.py`, the bounds `caps.py`, the groups an answer keeps `answers.py`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
from sqlalchemy import func
from sqlalchemy.engine import Engine

from observatory_core.accounts.permissions import Permission
from observatory_core.accounts.scope import Scope, scoped_spans
from observatory_core.accounts.visibility import require_metric_query
from observatory_core.base.settings import get_settings
from observatory_core.base.zones import UTC_ZONE, Zone
from observatory_core.metrics.answers import answer_series, answer_totals
from observatory_core.metrics.caps import Caps, bucket_count, check_cells, refuse_early
from observatory_core.metrics.catalog import PERCENTILES, Agg
from observatory_core.metrics.folding import OTHER
from observatory_core.metrics.partial import partial_buckets
from observatory_core.metrics.query import MetricError, MetricQuery
from observatory_core.metrics.shaping import complete, present
from observatory_core.metrics.trace_path import TOTALS_GRAINS, trace_series
from observatory_core.rollups.dimensions import declarable, slot_groups
from observatory_core.storage import latency_bins as sketch
from observatory_core.storage.schema import spans
from observatory_core.storage.stores import store_for


@dataclass(frozen=True)
class MetricResult:
    frame: pl.DataFrame  # bucket (if bucketed), group-by columns, one column per series
    series: tuple[str, ...]
    group_by: tuple[str, ...]
    bucket_seconds: int | None
    start: datetime
    end: datetime
    source: str  # "raw" or "rollup"
    grains: tuple[str, ...]  # what the rollup path read (e.g. "1hour", "1min", "raw edges")
    exact_percentiles: bool | None  # None when no percentile was asked for
    seconds: float
    # a totals query from rollups: the merged latency bins (counts per sketch bin)
    sketch: np.ndarray | None = None
    folded_groups: int = 0  # groups past the cap, folded into "(other)" (or left out, with having)
    # bucket start -> covered seconds, for the buckets that are not whole (`metrics.partial`)
    partial_buckets: dict[datetime, float] = field(default_factory=dict)
    # whose clock the buckets follow: `bucket` holds each bucket's start as a UTC instant
    zone: Zone = UTC_ZONE

    @property
    def explanation(self) -> str:
        where = "raw spans" if self.source == "raw" else "rollups (" + ", ".join(self.grains) + ")"
        if self.exact_percentiles is None:
            text = f"Computed from {where}; counts and sums are exact."
        elif self.exact_percentiles:
            text = f"Computed from {where}; percentiles are exact."
        else:
            text = f"Computed from {where}; percentiles are approximate, {sketch.bound_text()}."
        return text + (f" {self.folded_note}" if self.folded_groups else "")

    @property
    def folded_note(self) -> str:
        return (
            f'{self.folded_groups:,} smaller groups are folded into "{OTHER}" (left out when a '
            "having condition applies); filter or set a top-N limit to see them."
        )


def _window(
    engine: Engine, scope: Scope, query: MetricQuery, now: datetime
) -> tuple[datetime, datetime]:
    start, end = query.filters.window(now)
    end = end or now
    if start is None:  # all time: from the first span the filter can see
        with engine.connect() as conn:
            first = conn.execute(scoped_spans(scope, func.min(spans.c.start_time))).scalar()
        start = first or end - timedelta(days=1)
    if start >= end:
        raise MetricError("The time range is empty; its start must come before its end.")
    return start, end


def _check_permissions(scope: Scope, query: MetricQuery) -> None:
    """Series, having, sort, group-bys and filters: nothing computed from a field the role
    may not see (a cost series for a viewer, a text search for billing) -- see `visibility`."""
    scope.require(Permission.METRICS_READ)
    require_metric_query(scope, query)


def _declared_slots(
    engine: Engine, scope: Scope, query: MetricQuery, start: datetime
) -> tuple[MetricQuery, dict[str, str]]:
    """The query with each key (or field such as user_id) the org declared as a dimension read
    from its slot (rollups carry it, `rollups/dimensions.py`), when its back-fill covers the
    range; key -> slot."""
    keyed = [g for g in query.group_by if declarable(g)]
    if not keyed or trace_series(query.all_series):  # trace_totals carry no slots
        return query, {}
    if not store_for(engine).reads_declared_slots:  # the span store: read from the spans
        return query, {}
    slots = {k: s for k, s in slot_groups(engine, scope.org_id, start).items() if k in keyed}
    if not slots:
        return query, {}
    group_by = tuple(slots.get(g, g) for g in query.group_by)
    return replace(query, group_by=group_by, sort=slots.get(query.sort, query.sort)), slots


def run_metrics(
    engine: Engine,
    scope: Scope,
    query: MetricQuery,
    *,
    now: datetime | None = None,
    force: str | None = None,
    max_groups: int | None = None,
    max_cells: int | None = None,
    max_raw_spans: int | None = None,
    fill: bool = True,
) -> MetricResult:
    """The series of `query` for the scope. `force` ("raw" or "rollup") is for tests and benchmarks.
    `fill`: every bucket of every group, as a chart draws them (zero for counts and sums, a
    gap otherwise); without it a bucketed answer holds only the buckets with data, which is
    what the API sends unless asked (most cells of a wide grouping are empty: docs/metrics.md).

    Bounded: a query without a limit keeps at most `max_groups` groups (settings by default)
    and folds the rest into "(other)"; an answer past `max_cells` values is refused, and so is
    a grouping rollups cannot answer over more than `max_raw_spans` spans (both before the read
    when the rollups tell, `refuse_early`)."""
    started = time.perf_counter()
    now = now or datetime.now(UTC)
    settings = get_settings()
    caps = Caps(
        max_groups or settings.metrics_max_groups,
        max_cells or settings.metrics_max_cells,
        max_raw_spans or settings.metrics_max_raw_spans,
    )
    series = query.all_series
    _check_permissions(scope, query)
    trace_series(series)  # one subject per query: a mix is refused
    start, end = _window(engine, scope, query, now)
    asked = query
    query, slots = _declared_slots(engine, scope, query, start)
    bucketing = query.bucketing(start, end)
    bucket_seconds = bucketing.seconds if bucketing else None
    args = (engine, scope, query, series)
    if force is None:
        refuse_early(args, query, caps, bucketing and bucket_count(bucketing), start, end, now)
    partial: dict[datetime, float] = {}
    if bucketing is None:
        frame, source, grains, folded = answer_totals(args, query, caps, start, end, now, force)
    else:
        frame, source, grains, folded = answer_series(
            args, query, caps, bucketing, start, end, now, force
        )
        groups = frame.select(query.group_by).n_unique() if query.group_by else 1
        check_cells(query, bucket_count(bucketing), groups, caps)
        frame = (complete if fill else present)(frame, series, query.group_by, bucketing)
        cut_start = query.filters.window(now)[0] is not None
        partial = partial_buckets(
            start, end, now, bucket_seconds, cut_start=cut_start, bucketing=bucketing
        )
    sketch = None
    if "_bins" in frame.columns and bucket_seconds is None and not query.group_by:
        sketch = frame["_bins"].to_numpy()[0]
    wanted = [c for c in ("bucket", *query.group_by) if c in frame.columns] + list(query.series)
    frame = frame.select(wanted).rename({slot: key for key, slot in slots.items()})
    query = asked
    has_percentiles = any(Agg(s.split(".")[1]) in PERCENTILES for s in query.series)
    return MetricResult(
        frame=frame,
        series=query.series,
        group_by=query.group_by,
        bucket_seconds=bucket_seconds,
        start=start,
        end=end,
        source=source,
        grains=grains,
        # trace_totals hold each trace's own figures: its percentiles are exact too
        exact_percentiles=(source == "raw" or grains == TOTALS_GRAINS) if has_percentiles else None,
        seconds=time.perf_counter() - started,
        sketch=sketch,
        folded_groups=folded,
        partial_buckets=partial,
        zone=query.zone,
    )
