"""What changed: a metric's change between two periods, split by the values of one group-by.

Sums (cost, tokens, requests) split as plain differences: each value's figure after minus
before. Ratios and averages (error rate, mean latency, cost per request) split by the midpoint
shift-share (docs/metrics.md, "What changed"): with w a value's share of the rows the figure is
an average over and r its own figure, the whole is sum(w * r), and each value's part of the
change is a mix effect (w1 - w0) * (r0 + r1) / 2 plus a rate effect (r1 - r0) * (w0 + w1) / 2,
which add up exactly to w1 * r1 - w0 * r0. A value seen in one period only counts fully (all
mix). Percentiles, extremes, deviations and distinct counts have no such split and are refused.

Both periods are read by the metrics engine (so the figures are the Metrics page's and the
Overview's), one grouped totals query each; the answer keeps the top values by the size of
their part and folds the rest into one "(other)" row whose parts are the sums of theirs.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.engine import Engine

from observatory_core.accounts.permissions import Permission
from observatory_core.accounts.scope import Scope
from observatory_core.accounts.visibility import metric_visible, require_group_by, require_series
from observatory_core.base.errors import UserError
from observatory_core.filters.spec import FilterSpec, parse_time
from observatory_core.metrics.caps import MAX_SCANNED_GROUPS
from observatory_core.metrics.catalog import DIMENSIONS, METRICS, PERCENTILES, Agg, Kind
from observatory_core.metrics.engine import run_metrics
from observatory_core.metrics.folding import OTHER
from observatory_core.metrics.query import MetricError, MetricQuery, parse_series
from observatory_core.reports import significance as sig
from observatory_core.semantic.metrics import sample_series

DEFAULT_TOP = 10
MAX_TOP = 100
# The page's and the API's own parameters besides the filters (the period is the filter's).
PARAMS = ("series", "dimension", "top", "before_start", "before_end")
# How a change splits: plain differences, or the midpoint shift-share (mix and rate effects).
DIFFERENCE, SHIFT_SHARE = "difference", "shift-share"
NOT_SPLIT = (
    "A percentile of the whole is not made of the values' percentiles, so its change cannot "
    "be split exactly into parts; pick the average instead (e.g. duration_ms.avg), or compare "
    "the percentile per value on the Metrics page."
)


class ChangeError(UserError):
    """A change that cannot be split; the message says what to pick instead."""


@dataclass(frozen=True)
class Periods:
    """The two periods compared: `before` (the baseline) and `after`, each [start, end)."""

    before_start: datetime
    before_end: datetime
    after_start: datetime
    after_end: datetime

    @classmethod
    def previous_of(cls, spec: FilterSpec, now: datetime) -> Periods:
        """The period of `spec` against the one of equal length just before it."""
        start, end = spec.window(now)
        if start is None:
            raise ChangeError("Comparing two periods needs a time range, not all time.")
        end = end or now
        return cls(start - (end - start), start, start, end)

    @classmethod
    def of(
        cls,
        spec: FilterSpec,
        now: datetime,
        before_start: str | datetime | None = None,
        before_end: str | datetime | None = None,
    ) -> Periods:
        """`spec`'s period against the baseline given (ISO texts from a link or the API), or
        against the one of equal length just before it when none is."""
        default = cls.previous_of(spec, now)
        if before_start is None and before_end is None:
            return default
        if before_start is None or before_end is None:
            raise ChangeError("Give both ends of the baseline period (before_start, before_end).")
        times = [
            t if isinstance(t, datetime) else parse_time(name, t)
            for name, t in (("before_start", before_start), ("before_end", before_end))
        ]
        return cls(times[0], times[1], default.after_start, default.after_end)

    def check(self) -> None:
        if self.before_start >= self.before_end or self.after_start >= self.after_end:
            raise ChangeError("Each period's start must come before its end.")


@dataclass(frozen=True)
class Plan:
    """How a series splits: its method and the engine series each period needs."""

    series: str
    method: str
    weight: str | None  # the count a ratio or an average is over (None for sums)
    needed: tuple[str, ...]


def plan(series: str) -> Plan:
    """How `series` ("metric.agg", or a metric alone) splits, or a message saying why it does not."""
    try:  # the metrics engine's reading (and its messages) of a metric and an aggregation
        metric_name, agg = parse_series(series)
    except MetricError as exc:
        raise ChangeError(str(exc)) from None
    m = METRICS[metric_name]
    if "." not in str(series):  # no aggregation named: totals for money and tokens, else means
        sums = m.kind == Kind.VALUE and m.unit in ("usd", "tokens")
        agg = Agg.SUM if sums else Agg.AVG if m.kind == Kind.VALUE else m.aggregations[0]
    name = f"{metric_name}.{agg.value}"
    if agg in PERCENTILES:
        raise ChangeError(f"{name}: {NOT_SPLIT}")
    if m.kind == Kind.DISTINCT:
        raise ChangeError(
            f"{name} counts distinct values: one counted under two values would count twice, "
            "so its change cannot be split into parts. Pick a count or a sum."
        )
    if agg in (Agg.MIN, Agg.MAX, Agg.STDDEV):
        raise ChangeError(
            f"{name}: the {agg.value} of the whole is not made of the values' parts, so its "
            "change cannot be split. Pick the sum or the average."
        )
    if m.kind == Kind.ROWS or agg == Agg.COUNT:
        return Plan(name, DIFFERENCE, None, (name,))
    if agg == Agg.SUM:
        stats = (f"{metric_name}.count", f"{metric_name}.avg", f"{metric_name}.stddev")
        return Plan(name, DIFFERENCE, None, (name, *stats))
    if m.kind == Kind.SHARE:
        weight = sample_series(name)
        return Plan(name, SHIFT_SHARE, weight, (name, weight))
    weight = f"{metric_name}.count"
    return Plan(name, SHIFT_SHARE, weight, (name, weight, f"{metric_name}.stddev"))


@dataclass(frozen=True)
class Contribution:
    """One value's part of the change (mix + rate for a ratio or an average)."""

    value: Any  # the group's value (None: rows without one); OTHER for the folded rest
    groups: int  # how many values this row stands for (more than 1 for "(other)")
    before: float | None  # the value's own figure in each period (None: not seen)
    after: float | None
    weight_before: float | None  # its share of the rows (ratios and averages)
    weight_after: float | None
    change: float
    mix: float | None
    rate: float | None
    verdict: sig.Verdict

    @property
    def other(self) -> bool:
        return self.groups > 1


@dataclass(frozen=True)
class Change:
    series: str
    label: str
    unit: str
    dimension: str
    method: str  # DIFFERENCE or SHIFT_SHARE
    periods: Periods
    before: float | None
    after: float | None
    contributions: list[Contribution]  # largest parts first, "(other)" last
    groups: int  # how many values were seen in either period
    source: str

    @property
    def change(self) -> float | None:
        if self.before is None or self.after is None:
            return None
        return self.after - self.before


def _verdict(p: Plan, a: dict | None, b: dict | None) -> sig.Verdict:
    """The Overview's test on one value's own figure, after (`a`) against before (`b`)."""
    a, b = a or {}, b or {}
    metric = p.series.split(".")[0]

    def get(row: dict, key: str) -> float:
        return row.get(key) or 0

    if p.method == DIFFERENCE and len(p.needed) == 1:
        verdict = sig.counts(int(get(a, p.series)), int(get(b, p.series)))
    elif p.method == DIFFERENCE:
        n = f"{metric}.count"
        na, nb = int(get(a, n)), int(get(b, n))
        verdict = sig.totals(
            get(a, p.series),
            sig.sumsq(a, metric, na),
            na,
            get(b, p.series),
            sig.sumsq(b, metric, nb),
            nb,
        )
    else:
        na, nb = int(get(a, p.weight)), int(get(b, p.weight))
        if METRICS[metric].kind == Kind.SHARE:
            verdict = sig.proportions(
                round(get(a, p.series) * na), na, round(get(b, p.series) * nb), nb
            )
        else:
            verdict = sig.means(
                get(a, p.series) * na,
                sig.sumsq(a, metric, na),
                na,
                get(b, p.series) * nb,
                sig.sumsq(b, metric, nb),
                nb,
            )
    return sig.unless_unchanged(verdict, a.get(p.series), b.get(p.series))


def _parts(p: Plan, key: Any, a: dict | None, b: dict | None, wa: float, wb: float) -> Contribution:
    """One value's part: after `a` against before `b` (None: not seen in that period)."""
    ra = a.get(p.series) if a else None
    rb = b.get(p.series) if b else None
    verdict = _verdict(p, a, b)
    if p.method == DIFFERENCE:
        change = (ra or 0) - (rb or 0)
        return Contribution(key, 1, rb, ra, None, None, change, None, None, verdict)
    sa = (a.get(p.weight) or 0) / wa if a and wa else 0.0
    sb = (b.get(p.weight) or 0) / wb if b and wb else 0.0
    if not sa:
        ra = None
    if not sb:
        rb = None
    if ra is None and rb is None:
        return Contribution(key, 1, None, None, sb, sa, 0.0, 0.0, 0.0, verdict)
    # seen in one period only: its whole part is mix (its figure stands for both ends)
    r0, r1 = (rb if rb is not None else ra), (ra if ra is not None else rb)
    mix = (sa - sb) * (r0 + r1) / 2
    rate = (r1 - r0) * (sa + sb) / 2
    return Contribution(key, 1, rb, ra, sb, sa, mix + rate, mix, rate, verdict)


def _fold(parts: list[Contribution], top: int) -> list[Contribution]:
    """The `top` largest parts, the rest summed into one "(other)" row (so the sum is kept)."""
    ranked = sorted(parts, key=lambda c: (-abs(c.change), str(c.value)))
    kept, rest = ranked[:top], ranked[top:]
    if not rest:
        return kept
    if len(rest) == 1:
        return kept + rest

    def total(name: str) -> float | None:
        values = [getattr(c, name) for c in rest]
        return None if any(v is None for v in values) else sum(values)

    other = Contribution(
        OTHER,
        sum(c.groups for c in rest),
        None,
        None,
        total("weight_before"),
        total("weight_after"),
        sum(c.change for c in rest),
        total("mix"),
        total("rate"),
        sig.NONE,
    )
    return kept + [other]


def _whole(p: Plan, rows: dict[Any, dict], weight: float) -> float | None:
    if p.method == DIFFERENCE:
        return float(sum(r.get(p.series) or 0 for r in rows.values()))
    if not weight:
        return None
    return sum((r.get(p.weight) or 0) * (r.get(p.series) or 0) for r in rows.values()) / weight


def _read(
    engine: Engine,
    scope: Scope,
    needed: tuple[str, ...],
    dimension: str,
    spec: FilterSpec,
    periods: Periods,
    now: datetime,
    force: str | None,
) -> tuple[dict[Any, dict], dict[Any, dict], str]:
    """Each period's rows by value: one grouped totals query per period, every value kept
    (the engine refuses past its scan cap); the answer is folded here, not by the engine,
    so both periods fold the same values."""
    frames = []
    source = ""
    for start, end in (
        (periods.after_start, periods.after_end),
        (periods.before_start, periods.before_end),
    ):
        query = MetricQuery(
            series=needed,
            filters=spec.replace(relative=None, start=start, end=end),
            bucket=None,
            group_by=(dimension,),
        )
        try:
            result = run_metrics(
                engine, scope, query, now=now, force=force, max_groups=MAX_SCANNED_GROUPS
            )
        except MetricError as exc:
            raise ChangeError(str(exc)) from None
        frames.append({row[dimension]: row for row in result.frame.to_dicts()})
        source = source or result.explanation
    return frames[0], frames[1], source


def _change(p: Plan, dimension, periods, after, before, top: int, source: str) -> Change:
    wa = float(sum(r.get(p.weight) or 0 for r in after.values())) if p.weight else 0.0
    wb = float(sum(r.get(p.weight) or 0 for r in before.values())) if p.weight else 0.0
    keys = list(dict.fromkeys([*after, *before]))
    parts = [_parts(p, k, after.get(k), before.get(k), wa, wb) for k in keys]
    m = METRICS[p.series.split(".")[0]]
    label = m.label if p.method == SHIFT_SHARE or m.kind == Kind.ROWS else f"{m.label}, total"
    return Change(
        series=p.series,
        label=label,
        unit=m.unit,
        dimension=dimension,
        method=p.method,
        periods=periods,
        before=_whole(p, before, wb),
        after=_whole(p, after, wa),
        contributions=_fold(parts, top),
        groups=len(keys),
        source=source,
    )


def what_changed(
    engine: Engine,
    scope: Scope,
    series: str | tuple[str, ...],
    dimension: str,
    spec: FilterSpec,
    periods: Periods | None = None,
    *,
    top: int = DEFAULT_TOP,
    now: datetime | None = None,
    force: str | None = None,
) -> Change | list[Change]:
    """How `series` changed from the period before to `spec`'s (or between `periods`, with the
    rest of `spec`'s filters), split by the values of `dimension`. Several series (of one
    subject: the Overview's headline figures) are read by the same two queries and give a
    list of changes."""
    now = now or datetime.now(UTC)
    scope.require(Permission.METRICS_READ)
    plans = [plan(s) for s in ((series,) if isinstance(series, str) else series)]
    needed = tuple(dict.fromkeys(n for p in plans for n in p.needed))
    require_series(scope, needed)  # a cost metric is refused for viewers
    if dimension not in DIMENSIONS:
        raise ChangeError(f"Cannot split by {dimension!r}; choose from {', '.join(DIMENSIONS)}.")
    require_group_by(scope, (dimension,))
    if isinstance(top, bool) or not isinstance(top, int) or not 1 <= top <= MAX_TOP:
        raise ChangeError(f"Keep from 1 to {MAX_TOP} values (top); the rest fold into {OTHER}.")
    periods = periods or Periods.previous_of(spec, now)
    periods.check()
    after, before, source = _read(engine, scope, needed, dimension, spec, periods, now, force)
    changes = [_change(p, dimension, periods, after, before, top, source) for p in plans]
    return changes[0] if isinstance(series, str) else changes


def link_params(series: str, dimension: str, periods: Periods) -> dict[str, str]:
    """The What changed page's query parameters for one change (the Overview's links): the
    period as the filter's start and end, the baseline as before_start and before_end."""

    def text(t: datetime) -> str:
        return t.astimezone(UTC).isoformat().replace("+00:00", "Z")

    return {
        "series": series,
        "dimension": dimension,
        "start": text(periods.after_start),
        "end": text(periods.after_end),
        "before_start": text(periods.before_start),
        "before_end": text(periods.before_end),
    }


def with_top(change: Change, top: int) -> Change:
    """The same change with fewer values kept (the Overview shows a handful)."""
    return replace(change, contributions=_fold(change.contributions, top))


def splittable() -> list[str]:
    """Every series whose change splits into parts, in the metrics' order (the page's choices;
    a value metric's count of rows with a value is left to the API)."""
    out = []
    for m in METRICS.values():
        for agg in m.aggregations:
            if m.kind == Kind.VALUE and agg == Agg.COUNT:
                continue
            with contextlib.suppress(ChangeError):
                out.append(plan(f"{m.name}.{agg.value}").series)
    return out


# The Overview's headline figures that split, each with its series (same subject: one pair of
# queries answers them all). Traces, the p95 and distinct users and sessions do not split.
HEADLINES = {
    "requests": "request_count.count",
    "cost": "total_cost.sum",
    "tokens": "total_tokens.sum",
    "avg_latency": "duration_ms.avg",
    "error_rate": "error_rate.avg",
    "success_rate": "success_rate.avg",
}
HEADLINE_DIMENSION = "model"


def headline_changes(
    engine: Engine,
    scope: Scope,
    spec: FilterSpec,
    start: datetime,
    end: datetime,
    *,
    top: int = 3,
    now: datetime | None = None,
) -> dict[str, Change]:
    """The Overview's headline changes by model (KPI key -> change) between its period
    [start, end) and the one of equal length before, the `top` parts each."""
    keys = [k for k, s in HEADLINES.items() if metric_visible(scope, s.split(".")[0])]
    periods = Periods(start - (end - start), start, start, end)
    found = what_changed(
        engine,
        scope,
        tuple(HEADLINES[k] for k in keys),
        HEADLINE_DIMENSION,
        spec,
        periods,
        top=top,
        now=now,
    )
    return dict(zip(keys, found, strict=True))
