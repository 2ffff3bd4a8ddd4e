"""A totals answer and a bucketed answer, each holding the groups the caps keep: the long
tail folded into "(other)" in the database, or left out when a having condition applies."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import polars as pl

from observatory_core.base.zones import Bucketing
from observatory_core.metrics.caps import Caps, bucket_count, capped_totals, check_cells
from observatory_core.metrics.folding import is_other, python_keys
from observatory_core.metrics.query import MetricQuery
from observatory_core.metrics.rollup_path import rollup_can_answer
from observatory_core.metrics.series_reads import ReadArgs, TooManyRows, compute
from observatory_core.metrics.shaping import keep_rows, typed


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


def _pick_groups(totals: pl.DataFrame, query: MetricQuery, caps: Caps) -> _Groups:
    """`totals` is already filtered, sorted and limited by `keep_rows`."""
    keys = list(query.group_by)
    if query.limit or totals.height <= caps.groups:
        return _Groups(totals.select(keys), None, 0)
    folded = totals.height - caps.groups
    top = totals.head(caps.groups)
    if query.having:  # "(other)" would mix in the groups the having left out
        return _Groups(top.select(keys), None, folded)
    return _Groups(None, python_keys(top, query.group_by), folded)


def answer_totals(
    args: ReadArgs,
    query: MetricQuery,
    caps: Caps,
    start: datetime,
    end: datetime,
    now: datetime,
    force: str | None,
) -> tuple[pl.DataFrame, str, tuple[str, ...], int]:
    """One row per group (or one row), the long tail folded into "(other)" past the cap."""
    frame, source, grains = capped_totals(*args, start, end, now, force)
    frame = keep_rows(frame, query)
    if not query.group_by:
        return frame, source, grains, 0
    groups = _pick_groups(frame, query, caps)
    if groups.fold is not None:
        frame, *_ = compute(*args, None, start, end, now, force, keep=groups.fold)
        frame = _order_other_last(typed(frame, args[3], query.group_by), query)
    elif groups.folded:
        frame = frame.head(caps.groups)
    return frame, source, grains, groups.folded


def answer_series(
    args: ReadArgs,
    query: MetricQuery,
    caps: Caps,
    bucketing: Bucketing,
    start: datetime,
    end: datetime,
    now: datetime,
    force: str | None,
) -> tuple[pl.DataFrame, str, tuple[str, ...], int]:
    """Every bucket of every kept group, checked against the cap on values before it is read."""
    series, group_by = args[3], query.group_by
    buckets = bucket_count(bucketing)
    check_cells(query, buckets, 1, caps)
    cheap = force != "raw" and rollup_can_answer(series, group_by, query.filters)
    # no more groups than both caps allow: past the cells cap the answer is refused anyway, so
    # reading further only delays the refusal
    fits = min(caps.groups, caps.cells // (buckets * len(query.series)))
    if group_by and cheap and fits and not (query.having or query.limit or query.sort):
        try:  # the common case, a few groups from rollups: one query, its rows capped
            frame, source, grains = compute(
                *args, bucketing, start, end, now, force, max_rows=buckets * fits
            )
            if frame.select(group_by).n_unique() <= fits:
                return typed(frame, series, group_by), source, grains, 0
        except TooManyRows:
            pass
    groups = None
    if group_by:  # how many groups, before the bucketed read (refused early if too many)
        totals, *_ = capped_totals(*args, start, end, now, force)
        groups = _pick_groups(keep_rows(totals, query), query, caps)
        check_cells(query, buckets, groups.count, caps)
    keep = groups.fold if groups else None
    frame, source, grains = compute(*args, bucketing, start, end, now, force, keep=keep)
    frame = typed(frame, series, group_by)
    if groups is not None and groups.kept is not None:
        frame = frame.join(groups.kept, on=list(group_by), how="semi", nulls_equal=True)
    return frame, source, grains, groups.folded if groups else 0
