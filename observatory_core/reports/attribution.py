"""Cost attribution: cost, requests, tokens and errors by one key (a group-by: a declared
field, "tag:<key>" or "metadata:<key>") for a period, each part's share of the total and its
change against the period before.

The spans with no value for the key are a row of their own ("(none)"), and the groups past
the answer's cap are one "(other)" row (`metrics/folding.py`), so the parts always add up to
the total (docs/metrics.md, "Cost attribution"). Roles that may not see costs get the other
figures only (`accounts.visibility`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import polars as pl
from sqlalchemy.engine import Engine

from observatory_core.accounts.permissions import Permission
from observatory_core.accounts.scope import Scope
from observatory_core.accounts.visibility import metric_visible
from observatory_core.base.errors import UserError
from observatory_core.filters.spec import FilterSpec
from observatory_core.metrics.engine import run_metrics
from observatory_core.metrics.query import MetricQuery

NONE = "(none)"
# figure -> the series it reads (all of one subject, LLM calls, so one query answers them)
FIGURES = {
    "cost": "total_cost.sum",
    "requests": "request_count.count",
    "tokens": "total_tokens.sum",
    "errors": "error_count.count",
}


@dataclass(frozen=True)
class Attribution:
    key: str
    start: datetime
    end: datetime
    figures: tuple[str, ...]  # the figures the role may see, in FIGURES order
    # one row per value of the key: `value`, then per figure: <figure>, <figure>_share,
    # <figure>_previous, <figure>_change_pct; sorted by the first figure, largest first
    frame: pl.DataFrame
    totals: dict[str, float]  # per figure, the whole period (the parts add up to it)
    previous_totals: dict[str, float]
    source: str  # how the figures were computed (the metrics engine's explanation)


def _query(spec: FilterSpec, series: tuple[str, ...], key: str) -> MetricQuery:
    return MetricQuery(series=series, filters=spec, bucket=None, group_by=(key,))


def _labelled(frame: pl.DataFrame, key: str) -> pl.DataFrame:
    """The key's values as text, the spans without one as "(none)"."""
    return frame.with_columns(pl.col(key).cast(pl.Utf8).fill_null(NONE).alias("value")).drop(key)


def cost_attribution(
    engine: Engine,
    scope: Scope,
    spec: FilterSpec,
    key: str,
    *,
    now: datetime | None = None,
    force: str | None = None,
) -> Attribution:
    """The period of `spec` split by `key`, against the period of equal length before it."""
    now = now or datetime.now(UTC)
    scope.require(Permission.METRICS_READ)
    if spec.window(now)[0] is None:
        raise UserError("Cost attribution compares two periods; pick a time range, not all time.")
    figures = tuple(f for f, s in FIGURES.items() if metric_visible(scope, s.split(".")[0]))
    series = tuple(FIGURES[f] for f in figures)
    current = _query(spec.pinned(now), series, key)
    runs = {
        "now": run_metrics(engine, scope, current, now=now, force=force),
        "before": run_metrics(engine, scope, current.previous(now), now=now, force=force),
    }
    frame = _labelled(runs["now"].frame, key)
    before = _labelled(runs["before"].frame, key)
    totals = {f: float(frame[FIGURES[f]].sum() or 0) for f in figures}
    previous_totals = {f: float(before[FIGURES[f]].sum() or 0) for f in figures}
    renamed = {FIGURES[f]: f for f in figures}
    frame = frame.rename(renamed)
    before = before.rename({FIGURES[f]: f"{f}_previous" for f in figures})
    frame = frame.join(before, on="value", how="left").with_columns(
        *(pl.col(f"{f}_previous").fill_null(0) for f in figures)
    )
    columns = ["value"]
    for f in figures:
        share = pl.col(f) / totals[f] if totals[f] else pl.lit(None, pl.Float64)
        previous = pl.col(f"{f}_previous")
        change = (
            pl.when(previous != 0).then((pl.col(f) - previous) / previous * 100.0).otherwise(None)
        )
        frame = frame.with_columns(share.alias(f"{f}_share"), change.alias(f"{f}_change_pct"))
        columns += [f, f"{f}_share", f"{f}_previous", f"{f}_change_pct"]
    frame = frame.select(columns).sort([figures[0], "value"], descending=[True, False])
    return Attribution(
        key=key,
        start=runs["now"].start,
        end=runs["now"].end,
        figures=figures,
        frame=frame,
        totals=totals,
        previous_totals=previous_totals,
        source=runs["now"].explanation,
    )
