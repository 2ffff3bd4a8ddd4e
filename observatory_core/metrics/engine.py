"""`run_metrics`: plan (rollup or raw), run, complete the buckets, apply having/sort/limit.

Every result says where it came from and whether its percentiles are exact.
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
from observatory_core.base.zones import UTC_ZONE, Bucketing, Zone
from observatory_core.filters.spec import FilterSpec
from observatory_core.metrics.catalog import METRICS, PERCENTILES, Agg, Subject
from observatory_core.metrics.estimate import known_groups, spans_in_range
from observatory_core.metrics.folding import FOLD_KEYS, OTHER, is_other, python_keys
from observatory_core.metrics.frames import frame_of
from observatory_core.metrics.partial import partial_buckets
from observatory_core.metrics.query import MetricError, MetricQuery
from observatory_core.metrics.raw import raw_select
from observatory_core.metrics.rollup_bins import merged_bins, without_partial_bins
from observatory_core.metrics.rollup_path import rollup_can_answer, rollup_select
from observatory_core.metrics.rollup_values import finalize
from observatory_core.metrics.shaping import complete, keep_rows, present, typed
from observatory_core.metrics.trace_path import TOTALS_GRAINS, trace_plan, trace_series
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


class _TooManyRows(Exception):
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
    read settings, the driver's tuples; `max_rows`: `_TooManyRows` past it); the alert
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
                    raise _TooManyRows
    return frame_of(columns, rows)


def _by_subject(series: tuple[str, ...]) -> dict[Subject, tuple[str, ...]]:
    """The series grouped by their metrics' subject, in the order asked."""
    out: dict[Subject, tuple[str, ...]] = {}
    for s in series:
        subject = METRICS[s.split(".")[0]].subject
        out[subject] = (*out.get(subject, ()), s)
    return out


def _compute(
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
    parts = _by_subject(series)
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
        raise _TooManyRows
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
    """`force`: "rollup" or "raw", as `_compute` decided for the whole query."""
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


# Groups a totals query may scan before it refuses (past this the grouping itself is the problem).
MAX_SCANNED_GROUPS = 200_000


@dataclass(frozen=True)
class _Caps:
    groups: int  # kept without a limit; the rest fold into "(other)"
    cells: int  # values per answer: buckets x groups x series
    raw_spans: int  # spans one answer may group from raw spans by a group-by rollups lack


def _bucket_count(buckets: Bucketing) -> int:
    return len(buckets.edges) - 1


def _check_cells(
    query: MetricQuery, buckets: int, groups: int, caps: _Caps, *, at_least: bool = False
) -> None:
    """`at_least`: `groups` is a lower bound (counted from rollups before the read)."""
    cells = buckets * max(groups, 1) * len(query.series)
    if cells <= caps.cells:
        return
    fits = caps.cells // (buckets * len(query.series))
    advice = (
        f"keep at most {fits} groups (a lower top-N limit), pick "
        if query.group_by and fits >= 1
        else "pick "
    )
    more = " or more" if at_least else ""
    raise MetricError(
        f"This chart would hold {cells:,}{more} values ({buckets:,} buckets x {groups:,}{more} "
        f"groups x {len(query.series)} series), over the limit of {caps.cells:,} per answer. "
        f"Narrow it: {advice}a larger bucket, a shorter range or fewer series."
    )


def _too_many_groups(query: MetricQuery) -> MetricError:
    return MetricError(
        f"Grouping by {', '.join(query.group_by)} gives over {MAX_SCANNED_GROUPS:,} groups. "
        "Group by fewer dimensions or filter the spans first."
    )


def _refuse_early(args, query: MetricQuery, caps: _Caps, buckets: int | None, start, end, now):
    """Refuse, before any span is read, what would be refused after the read: a raw grouping
    over more spans than `caps.raw_spans`, and a chart the cells cap refuses for the groups the
    rollups already know of (`metrics/estimate.py`). Nothing here when the planner is forced."""
    engine, scope, _, series = args
    spec = query.filters.pinned(now)
    if not query.group_by or trace_series(series):
        return
    if not rollup_can_answer(series, query.group_by, spec) and rollup_can_answer(series, (), spec):
        spans_seen = spans_in_range(engine, scope, spec, start, end)
        if spans_seen is not None and spans_seen > caps.raw_spans:
            slots = store_for(engine).reads_declared_slots
            raise _raw_refusal(query, spans_seen, caps.raw_spans, end - start, slots)
    if buckets is None or query.having:
        return
    most = query.limit or caps.groups + 1  # groups the answer holds at most ("(other)" too)
    fits = caps.cells // (buckets * len(query.series))
    if most <= fits:  # fits whatever the groups
        return
    subject = METRICS[series[0].split(".")[0]].subject
    known = known_groups(engine, scope, subject, query.group_by, spec, start, end)
    if known > MAX_SCANNED_GROUPS:
        raise _too_many_groups(query)
    _check_cells(query, buckets, min(known, most), caps, at_least=known < most)


def _raw_refusal(
    query: MetricQuery, spans_seen: int, cap: int, length: timedelta, slots: bool = True
) -> MetricError:
    """Which group-bys send the read to raw spans, and how to answer from rollups instead
    (`slots`: whether declaring a dimension would, on this store)."""
    raw = [g for g in query.group_by if not rollup_can_answer((), (g,), FilterSpec())]
    names = " and ".join(raw)
    hours = max(1, int(length / timedelta(hours=1) * cap / spans_seen))
    period = f"{hours // 24} days" if hours >= 48 else f"{hours} hours"
    fix = (
        f"declare {names} as a dimension (Admin page, Dimensions) so rollups answer "
        f"{'it' if len(raw) == 1 else 'them'}, or narrow the period to about {period}"
        if slots and all(declarable(g) for g in raw)
        else f"group by fewer dimensions or narrow the period to about {period}"
    )
    return MetricError(
        f"Grouping by {names} reads raw spans (the rollups do not carry "
        f"{'it' if len(raw) == 1 else 'them'}), and this range holds over {spans_seen:,} spans, "
        f"more than the {cap:,} one answer may group from raw spans. Narrow it: {fix}."
    )


def _totals(
    engine, scope, query, series, start, end, now, force
) -> tuple[pl.DataFrame, str, tuple[str, ...]]:
    """One row per group over the whole range, refused past MAX_SCANNED_GROUPS."""
    try:
        frame, source, grains = _compute(
            engine, scope, query, series, None, start, end, now, force, max_rows=MAX_SCANNED_GROUPS
        )
    except _TooManyRows:
        raise _too_many_groups(query) from None
    return typed(frame, series, query.group_by), source, grains


def _order_other_last(frame: pl.DataFrame, query: MetricQuery) -> pl.DataFrame:
    other = is_other(frame, query.group_by)
    return pl.concat([keep_rows(frame.filter(~other), query), frame.filter(other)])


@dataclass(frozen=True)
class _Groups:
    """Which groups an answer keeps: `kept` (a frame of group keys) or, past the cap without
    having or limit, the top keys (`fold`) with every other group folded into "(other)"."""

    kept: pl.DataFrame | None
    fold: list[str] | None
    folded: int

    @property
    def count(self) -> int:
        return len(self.fold) + 1 if self.fold is not None else self.kept.height


def _pick_groups(totals: pl.DataFrame, query: MetricQuery, caps: _Caps) -> _Groups:
    """`totals` is already filtered, sorted and limited by `keep_rows`."""
    keys = list(query.group_by)
    if query.limit or totals.height <= caps.groups:
        return _Groups(totals.select(keys), None, 0)
    folded = totals.height - caps.groups
    top = totals.head(caps.groups)
    if query.having:  # "(other)" would mix in the groups the having left out
        return _Groups(top.select(keys), None, folded)
    return _Groups(None, python_keys(top, query.group_by), folded)


def _answer_totals(args, query, caps, start, end, now, force):
    """One row per group (or one row), the long tail folded into "(other)" past the cap."""
    frame, source, grains = _totals(*args, start, end, now, force)
    frame = keep_rows(frame, query)
    if not query.group_by:
        return frame, source, grains, 0
    groups = _pick_groups(frame, query, caps)
    if groups.fold is not None:
        frame, *_ = _compute(*args, None, start, end, now, force, keep=groups.fold)
        frame = _order_other_last(typed(frame, args[3], query.group_by), query)
    elif groups.folded:
        frame = frame.head(caps.groups)
    return frame, source, grains, groups.folded


def _answer_series(args, query, caps, bucketing, start, end, now, force):
    """Every bucket of every kept group, checked against the cap on values before it is read."""
    series, group_by = args[3], query.group_by
    buckets = _bucket_count(bucketing)
    _check_cells(query, buckets, 1, caps)
    cheap = force != "raw" and rollup_can_answer(series, group_by, query.filters)
    # no more groups than both caps allow: past the cells cap the answer is refused anyway, so
    # reading further only delays the refusal
    fits = min(caps.groups, caps.cells // (buckets * len(query.series)))
    if group_by and cheap and fits and not (query.having or query.limit or query.sort):
        try:  # the common case, a few groups from rollups: one query, its rows capped
            frame, source, grains = _compute(
                *args, bucketing, start, end, now, force, max_rows=buckets * fits
            )
            if frame.select(group_by).n_unique() <= fits:
                return typed(frame, series, group_by), source, grains, 0
        except _TooManyRows:
            pass
    groups = None
    if group_by:  # how many groups, before the bucketed read (refused early if too many)
        totals, *_ = _totals(*args, start, end, now, force)
        groups = _pick_groups(keep_rows(totals, query), query, caps)
        _check_cells(query, buckets, groups.count, caps)
    keep = groups.fold if groups else None
    frame, source, grains = _compute(*args, bucketing, start, end, now, force, keep=keep)
    frame = typed(frame, series, group_by)
    if groups is not None and groups.kept is not None:
        frame = frame.join(groups.kept, on=list(group_by), how="semi", nulls_equal=True)
    return frame, source, grains, groups.folded if groups else 0


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
    when the rollups tell, `_refuse_early`)."""
    started = time.perf_counter()
    now = now or datetime.now(UTC)
    settings = get_settings()
    caps = _Caps(
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
        _refuse_early(args, query, caps, bucketing and _bucket_count(bucketing), start, end, now)
    partial: dict[datetime, float] = {}
    if bucketing is None:
        frame, source, grains, folded = _answer_totals(args, query, caps, start, end, now, force)
    else:
        frame, source, grains, folded = _answer_series(
            args, query, caps, bucketing, start, end, now, force
        )
        groups = frame.select(query.group_by).n_unique() if query.group_by else 1
        _check_cells(query, _bucket_count(bucketing), groups, caps)
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
