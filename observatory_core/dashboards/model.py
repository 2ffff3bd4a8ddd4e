"""A dashboard and its charts: what they are, their JSON form, and the one validation.

A chart is the Metrics page's query state (one series, bucket, group-by, top groups) plus a
kind and a filter of its own; every chart is checked by building the `MetricQuery` it stands
for, so a dashboard holds nothing the metrics engine would refuse, and a bad definition is
refused with the path of the field to fix (`charts[2].series: ...`). The JSON form is what the
API serves and takes, what an export downloads and an import reads: `to_dict` and `from_dict`
round-trip.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from observatory_core.base.errors import UserError
from observatory_core.base.plain_text import text_problem
from observatory_core.base.zones import UTC_ZONE, Zone
from observatory_core.filters.spec import FilterSpec
from observatory_core.metrics.catalog import BUCKETS, METRICS, Agg
from observatory_core.metrics.query import MetricQuery, parse_series

VERSION = 1
# kind -> what a person calls it
KINDS = {
    "line": "Line",
    "area": "Stacked area",
    "bar": "Bar",
    "table": "Table",
    "number": "Single number with change",
    "pie": "Pie",
}
NO_BUCKET = "none"  # one total per group (a pie, a number, bars per group)
CHART_BUCKETS = ("auto", *BUCKETS, NO_BUCKET)
MAX_CHARTS = 24
MAX_COLUMNS = 4
MAX_TOP = 10
MAX_NAME = 100
MAX_TEXT = 2000
TIME_KEYS = ("relative", "start", "end")
CHART_KEYS = ("title", "kind", "series", "bucket", "group_by", "top", "filters", "width")
DASHBOARD_KEYS = ("version", "name", "description", "filters", "columns", "charts")


class DashboardError(UserError):
    """A definition that cannot be saved or drawn; the message names the field to fix."""


def _fail(path: str, problem: str) -> DashboardError:
    return DashboardError(f"{path}: {problem}")


@dataclass(frozen=True)
class Chart:
    """One chart: a series of the metrics engine drawn as `kind`, over the dashboard's period
    and filters narrowed by its own `filters` (no time window: the period is the page's)."""

    title: str
    series: str  # "metric.aggregation", e.g. duration_ms.p95
    kind: str = "line"
    bucket: str = "auto"  # auto, a BUCKETS size, or "none" (totals per group)
    group_by: tuple[str, ...] = ()
    top: int = 5  # groups drawn; the rest fold into "(other)"
    filters: FilterSpec = field(default_factory=lambda: FilterSpec(relative=None))
    width: int = 1  # grid columns it spans

    @property
    def totals(self) -> bool:
        """Whether the chart is one value per group (no time axis)."""
        return self.bucket == NO_BUCKET or self.kind in ("number", "pie")

    def query(self, spec: FilterSpec, zone: Zone = UTC_ZONE) -> MetricQuery:
        """The engine's query: the page's period and filters, a filter of the chart's own
        replacing the page's on the same field."""
        merged = spec.replace(**self.filters.filters())
        return MetricQuery(
            series=(self.series,),
            filters=merged,
            bucket=None if self.totals else self.bucket,
            group_by=self.group_by,
            zone=zone,
        )


@dataclass(frozen=True)
class Dashboard:
    """A named grid of charts with the period and filters it opens with."""

    name: str
    charts: tuple[Chart, ...] = ()
    description: str = ""
    filters: FilterSpec = field(default_factory=lambda: FilterSpec(relative="7d"))
    columns: int = 2


def _text(data: dict, key: str, path: str, *, required: bool, limit: int) -> str:
    value = data.get(key, "")
    if not isinstance(value, str):
        raise _fail(f"{path}{key}", "must be text")
    value = value.strip()
    if problem := text_problem(value):
        raise _fail(f"{path}{key}", problem)
    if required and not value:
        raise _fail(f"{path}{key}", "is empty; give it a name")
    if len(value) > limit:
        raise _fail(f"{path}{key}", f"is {len(value):,} characters; the limit is {limit:,}")
    return value


def _int(data: dict, key: str, path: str, default: int, low: int, high: int) -> int:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _fail(f"{path}{key}", f"must be a whole number from {low} to {high}; got {value!r}")
    return value


def _unknown(data: dict, known: tuple[str, ...], path: str) -> None:
    extra = sorted(set(data) - set(known))
    if extra:
        raise _fail(f"{path}{extra[0]}", f"unknown field; known fields: {', '.join(known)}")


def filters_from(raw: Any, path: str, *, time: bool) -> FilterSpec:
    """A filter in the links' form ({"models": ["gpt-4o"], "relative": "7d"}), checked by
    `FilterSpec` itself. Charts take no time window: the page's period applies to them all."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise _fail(path, 'must be an object of filters, e.g. {"models": ["gpt-4o"]}')
    if not time and (asked := [k for k in TIME_KEYS if k in raw]):
        raise _fail(
            f"{path}.{asked[0]}", "a chart takes the dashboard's period; remove its time window"
        )
    params = {str(k): _link_values(v, f"{path}.{k}") for k, v in raw.items()}
    if time and not any(k in raw for k in TIME_KEYS):
        params["relative"] = ["7d"]
    try:
        spec = FilterSpec.from_query_params(params)
    except UserError as exc:
        raise _fail(path, str(exc)) from None
    return spec if time else spec.replace(relative=None)


def _link_values(value: Any, path: str) -> list[str]:
    """A filter's value as a link carries it: text, a number, or a list of them (a metadata
    pair may be written ["region", "eu"] or as its link text '["region", "eu"]')."""
    items = value if isinstance(value, list) else [value]
    out = []
    for item in items:
        if isinstance(item, list) and all(isinstance(x, str) for x in item):
            out.append(json.dumps(item))
        elif isinstance(item, str | int | float) and not isinstance(item, bool):
            out.append(str(item))
        else:
            raise _fail(path, f"must be text, a number or a list of them; got {item!r}")
    return out


def filters_to(spec: FilterSpec, *, time: bool) -> dict[str, Any]:
    """The links' form of `spec` (lists stay lists), without the window for a chart."""
    params = spec.to_query_params()
    if time and "relative" not in params and spec.relative is not None:
        params["relative"] = [spec.relative]  # the default (24h) spelled out
    out: dict[str, Any] = {}
    for key, values in params.items():
        if key in TIME_KEYS:
            if time:
                out[key] = values[-1]
        else:
            out[key] = values
    return out


def chart_from_dict(data: Any, index: int) -> Chart:
    """One chart, validated through the metrics engine's own checks."""
    path = f"charts[{index}]."
    if not isinstance(data, dict):
        raise _fail(f"charts[{index}]", "must be an object with title, kind, series ...")
    _unknown(data, CHART_KEYS, path)
    title = _text(data, "title", path, required=True, limit=MAX_NAME)
    kind = data.get("kind", "line")
    if not isinstance(kind, str) or kind not in KINDS:
        raise _fail(f"{path}kind", f"unknown kind {kind!r}; choose from {', '.join(KINDS)}")
    series = data.get("series")
    if not isinstance(series, str) or not series:
        raise _fail(f"{path}series", "give one metric and aggregation, e.g. total_cost.sum")
    try:
        metric, agg = parse_series(series)
    except UserError as exc:
        raise _fail(f"{path}series", str(exc)) from None
    series = f"{metric}.{agg.value}"
    bucket = data.get("bucket", "auto")
    if not isinstance(bucket, str) or bucket not in CHART_BUCKETS:
        raise _fail(
            f"{path}bucket", f"unknown bucket {bucket!r}; choose {', '.join(CHART_BUCKETS)}"
        )
    group_by = data.get("group_by", [])
    if isinstance(group_by, str):
        group_by = [group_by]
    if not isinstance(group_by, list) or not all(isinstance(g, str) for g in group_by):
        raise _fail(f"{path}group_by", 'must be a list of dimensions, e.g. ["model"]')
    try:  # the Metrics page's own checks: the same query it would run
        MetricQuery(series=(series,), group_by=tuple(group_by))
    except UserError as exc:
        raise _fail(f"{path}group_by", str(exc)) from None
    _kind_fits(kind, bucket, group_by, agg, path)
    return Chart(
        title=title,
        series=series,
        kind=kind,
        bucket=NO_BUCKET if kind in ("number", "pie") else bucket,
        group_by=tuple(group_by),
        top=_int(data, "top", path, 5, 1, MAX_TOP),
        filters=filters_from(data.get("filters"), f"{path}filters", time=False),
        width=_int(data, "width", path, 1, 1, MAX_COLUMNS),
    )


def _kind_fits(kind: str, bucket: str, group_by: list[str], agg: Agg, path: str) -> None:
    if kind in ("line", "area") and bucket == NO_BUCKET:
        raise _fail(f"{path}bucket", f"a {KINDS[kind].lower()} chart needs a time bucket; use auto")
    if kind == "number" and group_by:
        raise _fail(f"{path}group_by", "a single number has no groups; remove the group-by")
    if kind == "pie":
        if not group_by:
            raise _fail(f"{path}group_by", "a pie needs a group-by: its slices are the groups")
        if agg not in (Agg.COUNT, Agg.SUM):
            raise _fail(
                f"{path}series",
                f"a pie's slices must add up to a whole; {agg.value} does not (use count or "
                "sum, or a bar chart)",
            )


def chart_to_dict(chart: Chart) -> dict[str, Any]:
    out: dict[str, Any] = {
        "title": chart.title,
        "kind": chart.kind,
        "series": chart.series,
        "bucket": chart.bucket,
        "group_by": list(chart.group_by),
        "top": chart.top,
        "width": chart.width,
    }
    if chart.filters.filters():
        out["filters"] = filters_to(chart.filters, time=False)
    return out


def from_dict(data: Any) -> Dashboard:
    """A dashboard from its JSON form, refusing anything unknown or unfit with its path."""
    if not isinstance(data, dict):
        raise _fail("dashboard", "must be a JSON object with name and charts")
    _unknown(data, DASHBOARD_KEYS, "")
    version = data.get("version", VERSION)
    if version != VERSION:
        raise _fail("version", f"this server reads version {VERSION}; got {version!r}")
    charts = data.get("charts", [])
    if not isinstance(charts, list):
        raise _fail("charts", "must be a list of charts")
    if len(charts) > MAX_CHARTS:
        raise _fail("charts", f"{len(charts)} charts; a dashboard holds at most {MAX_CHARTS}")
    return Dashboard(
        name=_text(data, "name", "", required=True, limit=MAX_NAME),
        description=_text(data, "description", "", required=False, limit=MAX_TEXT),
        filters=filters_from(data.get("filters"), "filters", time=True),
        columns=_int(data, "columns", "", 2, 1, MAX_COLUMNS),
        charts=tuple(chart_from_dict(c, i) for i, c in enumerate(charts)),
    )


def to_dict(dashboard: Dashboard) -> dict[str, Any]:
    return {
        "version": VERSION,
        "name": dashboard.name,
        "description": dashboard.description,
        "filters": filters_to(dashboard.filters, time=True),
        "columns": dashboard.columns,
        "charts": [chart_to_dict(c) for c in dashboard.charts],
    }


def to_json(dashboard: Dashboard) -> str:
    """The export: stable (sorted keys, indented) so a file in version control diffs well."""
    return json.dumps(to_dict(dashboard), indent=2, sort_keys=True) + "\n"


def from_json(text: str | bytes) -> Dashboard:
    """An import: the export's text (or any JSON of the same form)."""
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise _fail("json", f"not valid JSON ({getattr(exc, 'msg', exc)})") from None
    return from_dict(data)


def series_choices() -> list[str]:
    """Every series a chart may show (metric.aggregation), in the catalog's order."""
    return [f"{m.name}.{a.value}" for m in METRICS.values() for a in m.aggregations]
