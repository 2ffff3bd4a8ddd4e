"""The Traces list grouped by the reader's local day: per day, how many rows the list holds
(spans, or traces by their root), their cost, errors and p95 latency.

The figures are read with the list's own conditions (`traces/query.py`: the same FilterSpec,
the same pin to the newest span, duplicates listed as the list lists them), not through the
metrics engine: the engine counts only the spans that count (no duplicates set aside) and has
no "traces with any matching span, by their root" subject, so its figures would not add up to
the list they summarise. The days are the buckets of the reader's clock (`base.zones`), the
same edges the metrics engine uses (`storage.dialect.bucket_of`): a New York day the clocks
change is 23 or 25 hours long.

In traces mode a trace falls on the day its root starts (the list's Start column) and carries
its whole tree's cost, errors and duration, as the list's rows do.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import Float, case, cast, func, select
from sqlalchemy.engine import Engine

from observatory_core.accounts.permissions import Permission
from observatory_core.accounts.scope import Scope, scoped_spans, span_conditions
from observatory_core.accounts.visibility import can_see, require_filters
from observatory_core.base.errors import UserError
from observatory_core.base.zones import DAY, UTC_ZONE, Bucketing, Zone
from observatory_core.filters.spec import FilterSpec
from observatory_core.storage.dialect import arrival_order, bucket_of, epoch_us, percentile_cont
from observatory_core.storage.schema import spans
from observatory_core.storage.stores import store_for
from observatory_core.traces.query import newest_pin, pinned_conditions
from observatory_core.traces.trace_lists import tree_totals

MODES = ("spans", "traces")
MAX_DAYS = 3660  # ten years of days; a list spanning more is narrowed first


@dataclass(frozen=True)
class DayList:
    """The list's days, newest first. Each row: `day` (the local date), `start` and `end` (the
    UTC instants the local day begins and ends), `rows` (spans or traces), `error_count`,
    `p95_duration_ms`, and `total_cost_usd` when the caller's role may see costs."""

    mode: str
    zone: Zone
    days: list[dict]
    as_of: datetime
    costs_shown: bool

    @property
    def total(self) -> int:
        """Rows over every day: the list's own total."""
        return sum(d["rows"] for d in self.days)


def _rows_of(scope: Scope, mode: str, where: list, max_id: int, *, named: bool = False):
    """One row per list row: its start, duration (ms), cost and error count, as the list has
    them. `named`: the roots' traces named in their own WHERE too (the span store's derived
    table then reads only those traces' spans, `Store.correlated_reads`)."""
    if mode == "spans":
        c = spans.c
        return (
            scoped_spans(
                scope,
                c.start_time.label("t"),
                cast(c.duration_ms, Float).label("ms"),
                c.total_cost_usd.label("cost"),
                case((c.status == "error", 1), else_=0).label("errors"),
            )
            .where(*where)
            .subquery("listed")
        )
    matching = spans.c.trace_id.in_(scoped_spans(scope, spans.c.trace_id).where(*where))
    tree = tree_totals(scope, matching, max_id)
    duration = (epoch_us(tree.c.t_last) - epoch_us(tree.c.t_first)) / 1000.0
    return (
        select(
            spans.c.start_time.label("t"),
            cast(duration, Float).label("ms"),
            tree.c.t_cost.label("cost"),
            tree.c.t_errors.label("errors"),
        )
        .select_from(spans.join(tree, tree.c.t_id == spans.c.trace_id))
        .where(
            *span_conditions(scope),
            # two conditions, not one and_() (kept from when the span store applied the pin
            # before picking each span's newest copy only when it stood alone; since schema
            # version 8 `spans` is the stored table there and both are plain conditions)
            spans.c.parent_span_id.is_(None),
            arrival_order(spans.c.id) <= max_id,
            # a trace that counts a span, as the list's (`traces/counted_traces.py`): the
            # tree's count of the spans that count, in the scope under the pin, is that test
            tree.c.t_spans > 0,
            *([matching] if named else []),
        )
        .subquery("listed")
    )


def list_days(
    engine: Engine,
    scope: Scope,
    spec: FilterSpec,
    *,
    mode: str = "spans",
    zone: Zone = UTC_ZONE,
    now: datetime | None = None,
) -> DayList:
    """The Traces list (`list_spans` with the same spec and mode) grouped by `zone`'s days."""
    scope.require(Permission.TRACES_READ)
    if mode not in MODES:
        raise UserError(f"List mode {mode!r} must be 'spans' or 'traces'.")
    require_filters(scope, spec)
    costs = can_see(scope, "total_cost_usd")
    as_of = now or datetime.now(UTC)
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT")
        max_id = newest_pin(conn)
        where = pinned_conditions(conn, spec, as_of, max_id)
        named = not store_for(conn).correlated_reads
        listed = _rows_of(scope, mode, where, max_id, named=named)
        first, last = conn.execute(select(func.min(listed.c.t), func.max(listed.c.t))).one()
        if first is None:
            return DayList(mode, zone, [], as_of, costs)
        first, last = (t if t.tzinfo else t.replace(tzinfo=UTC) for t in (first, last))
        if (last - first).days > MAX_DAYS:
            raise UserError(
                f"The list spans more than {MAX_DAYS:,} days; narrow the time range to group it by day."
            )
        bucketing = Bucketing.over(first, last + timedelta(microseconds=1), DAY, zone)
        day = bucket_of(listed.c.t, bucketing).label("day")
        figures = [
            day,
            func.count().label("rows"),
            func.sum(listed.c.errors).label("error_count"),
            percentile_cont(listed.c.ms, 0.95).label("p95_duration_ms"),
        ]
        if costs:
            figures.append(func.coalesce(func.sum(listed.c.cost), 0.0).label("total_cost_usd"))
        query = select(*figures).group_by(day).order_by(day.desc())
        rows = [dict(r) for r in conn.execute(query).mappings()]
    return DayList(mode, zone, [_day(r, zone) for r in rows], as_of, costs)


def _day(row: dict, zone: Zone) -> dict:
    start = row.pop("day")
    start = start if start.tzinfo else start.replace(tzinfo=UTC)
    local: date = zone.local(start).date()
    out = {
        "day": local,
        "start": start,
        "end": zone.midnight(local + timedelta(days=1)),
        "rows": int(row["rows"]),
        "error_count": int(row["error_count"] or 0),
        "p95_duration_ms": row["p95_duration_ms"],
    }
    if "total_cost_usd" in row:
        out["total_cost_usd"] = float(row["total_cost_usd"] or 0.0)
    return out


def day_spec(spec: FilterSpec, start: datetime, end: datetime, as_of: datetime) -> FilterSpec:
    """The list's filter narrowed to one local day [start, end): the window it had, cut to
    the day (a link from a day row into the list)."""
    low, high = spec.window(as_of)
    start = max(start, low) if low else start
    end = min(end, high) if high else end
    return spec.replace(relative=None, start=start, end=end)
