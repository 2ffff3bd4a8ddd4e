"""A dashboard chart (line, stacked area, bar, pie) as a Vega-Lite spec and its rows.

Vega-Lite, not plotly: plotly's 4.7 MB of code made loading and drawing a dashboard's charts
most of its time in the browser (docs/benchmarks.md, `dashboard_ui`). The specs are
plain dicts (no altair): nothing to import or validate on the server, and a test reads them as
they are sent. What a chart shows is the plotly version's: the group names and colours of
`ui.colors`, the axis in the series' unit (`metrics_view.axis_scale`), hover text formatted on
the server, times on the reader's clock, partial buckets dotted and lighter, and a marker per
point only on lines of at most `metrics_view.DENSE` points.

Times: each bucket's start is turned into the reader's wall clock (`ui.zone`) and sent as
epoch milliseconds of that wall clock read as UTC, drawn on a UTC time scale, so the axis shows
the reader's zone whatever zone the browser is in.
"""

from __future__ import annotations

import polars as pl

from observatory_core.dashboards.render import ChartData
from observatory_core.metrics.catalog import METRICS
from observatory_core.metrics.engine import MetricResult
from observatory_core.metrics.partial import covered_text
from observatory_core.ui import colors, format
from observatory_core.ui import metrics_view as mv

HEIGHT = 320  # the whole chart's, legend and axes included (Streamlit fits the spec in it)
# Vega's SVG renderer for charts of up to `SVG_ROWS` rows, so that the legend and axes stay text
# a screen reader (and a test) can find; past it, Streamlit's choice (a canvas for more than
# 2,000 bars or points, which an SVG draws slower).
RENDERER = "svg"
SVG_ROWS = 2000
# The rows' columns: the group's name, the bucket's start and end (wall clock, epoch ms), the
# time and value as the hover says them, the value in the axis's unit, the group's rank (the
# stacking and legend order); whether the bucket is partial, whether it or a neighbour is (the
# dotted line's points) and which edge of the range it is on (one dotted line per edge).
GROUP, START, END, WHEN, TEXT, VALUE, RANK = (
    "group",
    "start",
    "end",
    "when",
    "text",
    "value",
    "rank",
)
CUT, NEAR, EDGE = "cut", "near", "edge"
LOW, HIGH = "low", "high"  # a stacked bar's bottom and top (stacked here, in the groups' order)


def chart_spec(data: ChartData) -> tuple[pl.DataFrame, dict]:
    """The chart's rows and its Vega-Lite spec (the rows are passed beside it, as Arrow)."""
    chart, result = data.chart, data.result
    assert result is not None
    unit = METRICS[chart.series.split(".")[0]].unit
    groups = mv.groups_of(result)
    labels = [label for label, _ in groups]
    colours = colors.assign(labels)
    colour = {
        "field": GROUP,
        "type": "nominal",
        "sort": labels,
        "scale": {"domain": labels, "range": [colours[label] for label in labels]},
        "legend": _legend(chart.kind) if result.group_by or chart.kind == "pie" else None,
    }
    if chart.kind == "pie":
        rows, spec = _pie(result, chart.series, unit, groups, colour)
    elif chart.totals:
        rows, spec = _ranking(result, chart.series, unit, groups, colour)
    else:
        rows = _series_rows(result, chart.series, unit, groups, chart.kind)
        spec = _over_time(result, unit, chart.kind, colour, rows)
    head = {"$schema": "https://vega.github.io/schema/vega-lite/v5.json", "height": HEIGHT}
    if rows.height <= SVG_ROWS:
        head["usermeta"] = {"embedOptions": {"renderer": RENDERER}}
    return rows, {**head, **spec}


def _legend(kind: str) -> dict:
    """Below the chart, as many columns as its width holds (a third of the page or all of it)."""
    return {
        "orient": "bottom",
        "title": None,
        "columns": {"expr": "max(1, floor(width / 170))"},
        "labelLimit": 160,
        "symbolType": "stroke" if kind == "line" else "circle",
        "symbolOpacity": 1,  # not the dotted edges' lighter colour
    }


def _value_axis(unit: str, suffix: str) -> dict:
    """The value axis in the unit, as `metrics_view.format_axis` draws plotly's."""
    axis: dict = {"title": None}
    if unit == "usd":
        axis["labelExpr"] = "'$' + datum.label"
    elif unit == "ratio":
        axis["format"] = ".1%"
    elif unit == "ms" and suffix:
        axis["labelExpr"] = f"datum.label + '{suffix}'"
    return axis


def _tooltip(label: str, *, when: bool = True) -> list[dict]:
    shown = [{"field": GROUP, "type": "nominal", "title": "Group"}]
    if when:
        shown.append({"field": WHEN, "type": "nominal", "title": "Time"})
    return [*shown, {"field": TEXT, "type": "nominal", "title": label}]


def _totals(name: str, unit: str, groups: list) -> tuple[list, pl.DataFrame]:
    values = [part[name][0] for _, part in groups]
    rows = pl.DataFrame(
        {
            GROUP: [label for label, _ in groups],
            VALUE: values,
            TEXT: [format.by_unit(unit, v) for v in values],
            RANK: list(range(len(groups))),
        },
        schema={GROUP: pl.String, VALUE: pl.Float64, TEXT: pl.String, RANK: pl.Int32},
    )
    return values, rows


def _pie(result: MetricResult, name: str, unit: str, groups: list, colour: dict):
    """Slices in the groups' order, each with its share printed on it (above 4%)."""
    _, rows = _totals(name, unit, groups)
    share = {"joinaggregate": [{"op": "sum", "field": VALUE, "as": "whole"}]}
    percent = {"calculate": f"datum.{VALUE} / datum.whole", "as": "share"}
    tooltip = [
        *_tooltip(mv.series_label(name), when=False),
        {"field": "share", "type": "quantitative", "format": ".1%", "title": "Share"},
    ]
    base = {
        "theta": {"field": VALUE, "type": "quantitative", "stack": True},
        "order": {"field": RANK, "type": "ordinal"},
    }
    return rows, {
        "transform": [share, percent],
        "layer": [
            {
                "mark": {"type": "arc"},
                "encoding": {**base, "color": colour, "tooltip": tooltip},
            },
            {
                "transform": [{"filter": "datum.share >= 0.04"}],
                "mark": {
                    "type": "text",
                    "radius": {"expr": "min(width, height) * 0.35"},
                    "fill": "white",
                    "fontSize": 12,
                },
                "encoding": {**base, "text": {"field": "share", "format": ".0%"}},
            },
        ],
        "view": {"stroke": None},
    }


def _ranking(result: MetricResult, name: str, unit: str, groups: list, colour: dict):
    """One bar per group, in the engine's order, named on its axis."""
    values, rows = _totals(name, unit, groups)
    size, suffix = mv.axis_scale(unit, values)
    rows = rows.with_columns(pl.Series(VALUE, mv.scaled(values, size), pl.Float64))
    return rows, {
        "mark": {"type": "bar"},
        "encoding": {
            "x": {"field": GROUP, "type": "nominal", "sort": None, "axis": {"title": None}},
            "y": {"field": VALUE, "type": "quantitative", "axis": _value_axis(unit, suffix)},
            "color": {**colour, "legend": None},
            "tooltip": _tooltip(mv.series_label(name), when=False),
        },
    }


def _series_rows(
    result: MetricResult, name: str, unit: str, groups: list, kind: str
) -> pl.DataFrame:
    """One row per group and bucket: the value in the axis's unit, the hover's words, and for
    lines whether the bucket is cut short, is next to one, and its edge (0: start, 1: end)."""
    size, _ = mv.axis_scale(unit, result.frame[name].to_list())
    step = (result.bucket_seconds or 0) * 1000
    frames = []
    for rank, (label, part) in enumerate(groups):
        values = part[name].to_list()
        if kind == "area":  # stacked: a missing value adds nothing, as plotly drew it
            values = [v or 0 for v in values]
        buckets = part["bucket"].to_list()
        cut = [b in result.partial_buckets for b in buckets]
        near = [
            c or (i > 0 and cut[i - 1]) or (i + 1 < len(cut) and cut[i + 1])
            for i, c in enumerate(cut)
        ]
        text = [format.by_unit(unit, v) for v in values]
        if any(cut):
            seconds = result.bucket_seconds or 1
            text = [
                f"{t} ({covered_text(result.partial_buckets[b], seconds)})" if c else t
                for t, b, c in zip(text, buckets, cut, strict=True)
            ]
        wall = (
            part["bucket"]
            .cast(pl.Datetime("us", "UTC"))
            .dt.convert_time_zone(result.zone.name)
            .dt.replace_time_zone(None)
        )
        frames.append(
            pl.DataFrame(
                {
                    GROUP: [label] * len(values),
                    START: wall.dt.epoch("ms"),
                    WHEN: wall.dt.strftime("%Y-%m-%d %H:%M"),
                    TEXT: text,
                    VALUE: mv.scaled(values, size),
                    RANK: [rank] * len(values),
                    CUT: cut,
                    NEAR: near,
                    EDGE: [0 if i < len(values) / 2 else 1 for i in range(len(values))],
                },
                schema={
                    GROUP: pl.String,
                    START: pl.Int64,
                    WHEN: pl.String,
                    TEXT: pl.String,
                    VALUE: pl.Float64,
                    RANK: pl.Int32,
                    CUT: pl.Boolean,
                    NEAR: pl.Boolean,
                    EDGE: pl.Int8,
                },
            )
        )
    rows = pl.concat(frames).with_columns((pl.col(START) + step).alias(END))
    if kind == "bar":
        stacked = pl.col(VALUE).fill_null(0).cum_sum().over(START)
        rows = rows.with_columns(
            (stacked - pl.col(VALUE).fill_null(0)).alias(LOW), stacked.alias(HIGH)
        )
    return rows


def _over_time(result: MetricResult, unit: str, kind: str, colour: dict, rows) -> dict:
    """A line, a stacked area or stacked bars over the buckets, on the reader's clock."""
    size, suffix = mv.axis_scale(unit, result.frame[result.series[0]].to_list())
    x = {
        "field": START,
        "type": "temporal",
        "scale": {"type": "utc"},
        "axis": {"title": None, "labelOverlap": True},
    }
    y = {"field": VALUE, "type": "quantitative", "axis": _value_axis(unit, suffix)}
    order = {"field": RANK, "type": "ordinal"}
    tooltip = _tooltip(mv.series_label(result.series[0]))
    if kind == "bar":  # each bucket's bars on top of each other, as wide as the bucket
        encoding = {
            "x": x,
            "x2": {"field": END},
            "y": {**y, "field": HIGH},
            "y2": {"field": LOW},
            "color": colour,
        }
        return {"mark": {"type": "rect"}, "encoding": {**encoding, "tooltip": tooltip}}
    if kind == "area":
        encoding = {"x": x, "y": {**y, "stack": "zero"}, "color": colour, "order": order}
        mark = {"type": "area", "line": {"strokeWidth": 1}, "opacity": 0.85}
        return {"mark": mark, "encoding": {**encoding, "tooltip": tooltip}}
    # lines: the whole buckets, then the cut ones dotted from their whole neighbour
    points = rows.filter(pl.col(GROUP) == rows[GROUP][0]).height if rows.height else 0
    line = {
        "mark": {
            "type": "line",
            "point": mv.line_mode(points) == "lines+markers",
            "invalid": "break-paths-show-domains",  # a bucket without a value is a gap
        },
        "transform": [{"filter": f"!datum.{CUT}"}],
        "encoding": {"x": x, "y": y, "color": colour, "tooltip": tooltip},
    }
    layers = [line]
    if result.partial_buckets:
        layers += [
            {
                "transform": [{"filter": f"datum.{NEAR}"}],
                "mark": {"type": "line", "strokeDash": [2, 3], "opacity": 0.55},
                "encoding": {
                    "x": x,
                    "y": y,
                    "color": colour,
                    "detail": {"field": EDGE, "type": "nominal"},
                    "tooltip": tooltip,
                },
            },
            {
                "transform": [{"filter": f"datum.{CUT}"}],
                "mark": {"type": "point", "filled": False, "size": 45, "opacity": 0.55},
                "encoding": {
                    "x": x,
                    "y": y,
                    "color": colour,
                    "tooltip": tooltip,
                },
            },
        ]
    return {"layer": layers}
