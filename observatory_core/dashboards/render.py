"""A dashboard's numbers: each chart's `MetricQuery` run through the metrics engine under the
page's period and filters, with what a role may not see left out before anything is read.

The page passes its cached runner (`ui.cached.metrics`), the benchmark and the tests pass
`run_metrics` itself: the same queries either way.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, replace

from observatory_core.accounts.scope import Scope
from observatory_core.accounts.visibility import require_metric_query
from observatory_core.base.errors import PermissionDenied, UserError
from observatory_core.base.zones import UTC_ZONE, Zone
from observatory_core.dashboards.model import Chart, Dashboard
from observatory_core.filters.spec import FilterSpec
from observatory_core.metrics.engine import MetricResult
from observatory_core.metrics.query import MetricQuery

# (query, max_groups) -> result: `run_metrics` bound to an engine, scope and clock, or the
# page's cache of it
Runner = Callable[[MetricQuery, int], MetricResult]
HIDDEN = "Hidden for your role"


@dataclass(frozen=True)
class ChartData:
    """What one chart shows: its result (and the previous period's, for a number), or why
    not: `hidden` for a role that may not see what it reads, `problem` for a query the engine
    refused (a 1-minute bucket over 7 days)."""

    chart: Chart
    query: MetricQuery | None = None
    result: MetricResult | None = None
    previous: MetricResult | None = None
    hidden: str | None = None
    problem: str | None = None


def load_chart(
    run: Runner, scope: Scope, chart: Chart, spec: FilterSpec, zone: Zone = UTC_ZONE
) -> ChartData:
    """One chart's data. A chart reading a field the role may not see (a cost for a viewer, a
    text search for billing) is never computed: it says it is hidden, with no number."""
    try:
        query = chart.query(spec, zone)
        require_metric_query(scope, query)
    except PermissionDenied as exc:
        return ChartData(chart, hidden=_hidden(exc))
    except UserError as exc:
        return ChartData(chart, problem=str(exc))
    try:
        result = run(query, chart.top)
        previous = None
        if chart.kind == "number":
            length = result.end - result.start
            before = query.filters.replace(
                relative=None, start=result.start - length, end=result.start
            )
            previous = run(replace(query, filters=before), chart.top)
    except PermissionDenied as exc:
        return ChartData(chart, query=query, hidden=_hidden(exc))
    except UserError as exc:
        return ChartData(chart, query=query, problem=str(exc))
    return ChartData(chart, query=query, result=result, previous=previous)


def _hidden(exc: PermissionDenied) -> str:
    """The refusal as a reader of the chart needs it: what it reads, not what to pick."""
    reason = str(exc).split(" Pick a ")[0].split("; remove")[0].rstrip(".")
    return f"{HIDDEN}. {reason}."


# Chart reads at once in the whole process, whatever the number of pages loading: a dashboard's
# queries are independent and the database answers a few side by side faster than one after
# another, and one pool bounds the connections all pages together take from the engine's pool.
LOADERS = 4
_POOL = ThreadPoolExecutor(max_workers=LOADERS, thread_name_prefix="dashboard")


def each_chart(
    run: Runner,
    scope: Scope,
    dashboard: Dashboard,
    spec: FilterSpec,
    zone: Zone = UTC_ZONE,
    *,
    on_thread: Callable[[], None] | None = None,
) -> Iterator[tuple[int, ChartData]]:
    """Each chart's data as soon as it is read, on the process's chart pool (`LOADERS`
    threads): (its index, its data), in the order they finish. `on_thread` runs first on the
    loading thread (the page attaches its Streamlit context there); each task also carries
    the caller's context variables (the request's time budget). When the caller stops early
    (a chart failed, the page was left), the charts not yet started are dropped."""

    def one(index: int, chart: Chart) -> tuple[int, ChartData]:
        if on_thread is not None:
            on_thread()
        return index, load_chart(run, scope, chart, spec, zone)

    futures = [
        _POOL.submit(contextvars.copy_context().run, one, i, chart)
        for i, chart in enumerate(dashboard.charts)
    ]
    try:
        for future in as_completed(futures):
            yield future.result()
    finally:
        for future in futures:
            future.cancel()


def load_dashboard(
    run: Runner, scope: Scope, dashboard: Dashboard, spec: FilterSpec, zone: Zone = UTC_ZONE
) -> list[ChartData]:
    """Every chart's data, in the dashboard's order (read as `each_chart` reads them)."""
    loaded = dict(each_chart(run, scope, dashboard, spec, zone))
    return [loaded[i] for i in range(len(dashboard.charts))]


def total(result: MetricResult | None) -> float | None:
    """A totals answer without groups as its one value (None: no value, e.g. no spans)."""
    if result is None or result.frame.is_empty():
        return None
    value = result.frame[result.series[0]][0]
    return None if value is None else float(value)


def change(data: ChartData) -> float | None:
    """A number's relative change against the period before (None: nothing to compare)."""
    now, before = total(data.result), total(data.previous)
    if now is None or before in (None, 0):
        return None
    return (now - before) / abs(before)
