"""`MetricQuery`: which series, over which spans (a FilterSpec), bucketed and grouped how.

Validation happens on construction, with messages that name what to change.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from observatory_core.base.errors import UserError
from observatory_core.base.zones import UTC_ZONE, Bucketing, Zone
from observatory_core.filters.spec import FilterSpec
from observatory_core.metrics.catalog import (
    AUTO_POINTS,
    BUCKETS,
    MAX_GROUP_BY,
    MAX_RANGE_DAYS,
    METRICS,
    Agg,
)
from observatory_core.semantic.field_lookups import dimension_problem

COMPARATORS = (">", ">=", "<", "<=", "=", "!=")
MAX_LIMIT = 1000


class MetricError(UserError):
    """A metric query asks for something that cannot be computed; the message says what to change."""


def parse_series(text: str) -> tuple[str, Agg]:
    """'duration_ms.p95' -> ('duration_ms', Agg.P95), refusing unknown or unfitting pairs."""
    metric, _, agg = str(text).partition(".")
    if metric not in METRICS:
        raise MetricError(f"Unknown metric {metric!r}; choose from {', '.join(METRICS)}.")
    m = METRICS[metric]
    if not agg:
        return metric, m.default_agg()
    try:
        parsed = Agg(agg)
    except ValueError:
        raise MetricError(
            f"Unknown aggregation {agg!r}; choose from {', '.join(a.value for a in Agg)}."
        ) from None
    if parsed not in m.aggregations:
        fits = ", ".join(a.value for a in m.aggregations)
        raise MetricError(f"{parsed.value} does not fit {metric} (a {m.unit} metric); use {fits}.")
    return metric, parsed


@dataclass(frozen=True)
class Having:
    """Keep only groups whose total for `series` compares true against `value`."""

    series: str
    op: str
    value: float

    def __post_init__(self) -> None:
        parse_series(self.series)
        if self.op not in COMPARATORS:
            raise MetricError(
                f"Having: unknown comparison {self.op!r}; use one of {' '.join(COMPARATORS)}."
            )
        if (
            isinstance(self.value, bool)
            or not isinstance(self.value, int | float)
            or not (math.isfinite(self.value))
        ):
            raise MetricError(f"Having: the threshold {self.value!r} is not a number.")


@dataclass(frozen=True)
class MetricQuery:
    series: tuple[str, ...]
    filters: FilterSpec = field(default_factory=FilterSpec)
    bucket: str | None = "auto"  # 1min, 5min, 1hour, 1day, auto; None = one total per group
    group_by: tuple[str, ...] = ()
    having: tuple[Having, ...] = ()
    sort: str | None = None  # a series or a group-by dimension; default: the first series
    descending: bool = True
    limit: int | None = None  # groups kept (rows, for totals)
    # whose wall clock the day, week and hour buckets follow (a name is accepted and checked)
    zone: Zone = UTC_ZONE

    def __post_init__(self) -> None:
        if not isinstance(self.zone, Zone):
            object.__setattr__(self, "zone", Zone(str(self.zone)))
        if not self.series:
            raise MetricError("Pick at least one metric.")
        names = [f"{m}.{a.value}" for m, a in (parse_series(s) for s in self.series)]
        object.__setattr__(self, "series", tuple(dict.fromkeys(names)))
        if self.bucket is not None and self.bucket != "auto" and self.bucket not in BUCKETS:
            raise MetricError(
                f"Unknown bucket size {self.bucket!r}; choose auto, {', '.join(BUCKETS)}."
            )
        if len(self.group_by) > MAX_GROUP_BY:
            raise MetricError(
                f"Group by at most {MAX_GROUP_BY} dimensions; you chose {len(self.group_by)}, "
                f"remove {len(self.group_by) - MAX_GROUP_BY}."
            )
        for dim in self.group_by:
            if problem := dimension_problem(dim):
                raise MetricError(problem)
        if len(set(self.group_by)) != len(self.group_by):
            raise MetricError("Each group-by dimension may appear once.")
        if self.sort is not None and self.sort not in (*self.all_series, *self.group_by):
            try:
                name = "{}.{}".format(*parse_series(self.sort))
            except MetricError:
                raise MetricError(
                    f"Cannot sort by {self.sort!r}; sort by one of the chosen metrics or group-bys."
                ) from None
            object.__setattr__(self, "sort", name)
        if self.limit is not None and (
            isinstance(self.limit, bool)
            or not isinstance(self.limit, int)
            or not 1 <= self.limit <= MAX_LIMIT
        ):
            raise MetricError(f"Limit must be a whole number from 1 to {MAX_LIMIT}.")

    @property
    def all_series(self) -> tuple[str, ...]:
        """The chosen series plus any that having or sort need."""
        extra = [h.series for h in self.having]
        if self.sort and "." in self.sort:
            extra.append(self.sort)
        names = ["{}.{}".format(*parse_series(s)) for s in extra]
        return tuple(dict.fromkeys((*self.series, *names)))

    def bucket_seconds(self, start: datetime, end: datetime) -> int | None:
        """The bucket width for this range, refusing ranges too long for the chosen size."""
        if self.bucket is None:
            return None
        span = end - start
        if self.bucket == "auto":  # weeks only when asked for
            for seconds in (s for b, s in BUCKETS.items() if b != "1week"):
                if span / timedelta(seconds=seconds) <= AUTO_POINTS:
                    return seconds
            return (
                BUCKETS["1day"]
                if span <= timedelta(days=MAX_RANGE_DAYS["1day"])
                else (self._too_long("1day", span))
            )
        if span > timedelta(days=MAX_RANGE_DAYS[self.bucket]):
            self._too_long(self.bucket, span)
        return BUCKETS[self.bucket]

    def bucketing(self, start: datetime, end: datetime) -> Bucketing | None:
        """The buckets of [start, end) on the query zone's clock (None: one total per group)."""
        seconds = self.bucket_seconds(start, end)
        return None if seconds is None else Bucketing.over(start, end, seconds, self.zone)

    def _too_long(self, bucket: str, span: timedelta) -> int:
        days = MAX_RANGE_DAYS[bucket]
        raise MetricError(
            f"A {bucket} bucket charts at most {days} day{'s' if days > 1 else ''}; the range is "
            f"{span.total_seconds() / 86400:.1f} days. Pick a larger bucket or a shorter range."
        )

    def previous(self, now: datetime) -> MetricQuery:
        """The same query over the period of equal length just before this one."""
        start, end = self.filters.window(now)
        if start is None or end is None:
            raise MetricError("Comparing with the previous period needs a time range.")
        length = end - start
        spec = self.filters.pinned(now).replace(start=start - length, end=start)
        return replace(self, filters=spec)


def query_to_json(query: MetricQuery) -> str:
    """A stable JSON form (for caches, stored rules and the API)."""
    import json

    data = {
        "series": list(query.series),
        "filters": json.loads(query.filters.to_json()),
        "bucket": query.bucket,
        "group_by": list(query.group_by),
        "having": [[h.series, h.op, h.value] for h in query.having],
        "sort": query.sort,
        "descending": query.descending,
        "limit": query.limit,
    }
    if not query.zone.is_utc:  # UTC queries keep the form they were stored in
        data["zone"] = query.zone.name
    return json.dumps(data, sort_keys=True)


def query_from_json(text: str) -> MetricQuery:
    import json

    data = json.loads(text)
    return MetricQuery(
        series=tuple(data["series"]),
        filters=FilterSpec.from_json(data["filters"]),
        bucket=data["bucket"],
        group_by=tuple(data["group_by"]),
        having=tuple(Having(*h) for h in data["having"]),
        sort=data["sort"],
        descending=data["descending"],
        limit=data["limit"],
        zone=Zone(data.get("zone") or "UTC"),
    )
