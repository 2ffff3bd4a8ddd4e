"""Widgets and charts of the Metrics page; the page itself only arranges them."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

import numpy as np
import plotly.graph_objects as go
import polars as pl
import streamlit as st
from plotly.subplots import make_subplots

from observatory_core.accounts.scope import Scope
from observatory_core.accounts.visibility import metric_visible
from observatory_core.base.errors import UserError
from observatory_core.base.zones import bucket_edges
from observatory_core.filters.spec import FilterSpec
from observatory_core.metrics.catalog import BUCKETS, MAX_GROUP_BY, METRICS
from observatory_core.metrics.engine import MetricResult
from observatory_core.metrics.folding import OTHER
from observatory_core.metrics.partial import covered_text
from observatory_core.metrics.query import MetricQuery
from observatory_core.semantic.field_declaration import FilterKind
from observatory_core.semantic.field_lookups import by_group, keyed_fields
from observatory_core.semantic.metrics import SUBJECT_LABELS, Subject
from observatory_core.ui import colors, format
from observatory_core.ui.group_choice import group_by_multiselect, valid
from observatory_core.ui.zone import as_instant, current_zone, local, local_series

PAGE_PARAMS = frozenset({"s", "m", "b", "g", "cmp", "top", "zoom"})
DEFAULT_SERIES = ("request_count.count", "duration_ms.p95")
DEFAULT_SUBJECT = Subject.LLM_CALLS
MAX_TOP = colors.MAX_SERIES  # groups drawn; the rest fold into one "(other)" line


def series_label(name: str) -> str:
    metric, agg = name.split(".")
    m = METRICS[metric]
    return m.label if len(m.aggregations) == 1 else f"{m.label} · {agg}"


def series_options(scope: Scope, subject: Subject | None = None) -> list[str]:
    """The series the role may chart (of one subject, when given)."""
    return [
        f"{m.name}.{a.value}"
        for m in METRICS.values()
        if metric_visible(scope, m.name) and (subject is None or m.subject is subject)
        for a in m.aggregations
    ]


def subject_options(scope: Scope) -> list[Subject]:
    """The subjects that have a metric the role may chart, LLM calls first."""
    have = {METRICS[s.split(".")[0]].subject for s in series_options(scope)}
    ordered = [DEFAULT_SUBJECT, *(s for s in Subject if s is not DEFAULT_SUBJECT)]
    return [s for s in ordered if s in have]


def _asked_subject(subjects: list[Subject]) -> Subject:
    """The subject of the link (`s`), else of its first metric (`m`), else LLM calls."""
    q = st.query_params
    if q.get("s") in {s.value for s in subjects}:
        return Subject(q["s"])
    for name in (q.get("m") or "").split(","):
        metric = METRICS.get(name.split(".")[0])
        if metric is not None and metric.subject in subjects:
            return metric.subject
    return DEFAULT_SUBJECT if DEFAULT_SUBJECT in subjects else subjects[0]


def default_series(options: list[str]) -> tuple[str, ...]:
    return tuple(s for s in DEFAULT_SERIES if s in options) or tuple(options[:1])


def _csv_param(name: str, allowed: list[str], default: tuple[str, ...]) -> list[str]:
    raw = st.query_params.get(name)
    if raw is None:
        return list(default)
    return [v for v in raw.split(",") if v in allowed]


def controls(scope: Scope) -> tuple[MetricQuery | None, bool, str | None]:
    """The query the widgets describe (None with a message when it is not valid), whether to
    compare with the previous period, and an error message."""
    q = st.query_params
    subjects = subject_options(scope)
    asked = _asked_subject(subjects)
    subject = st.selectbox(
        "Count over",
        subjects,
        index=subjects.index(asked),
        format_func=lambda s: SUBJECT_LABELS[s],
        key="mx_subject",
        help="The rows the metrics are computed over: LLM calls are the requests (spans that "
        "call a model); tool calls, agent runs and retrievals are the spans of that operation.",
    )
    options = series_options(scope, subject)
    defaults = default_series(options)
    top = st.columns([4, 1.3, 3, 1.2])
    series = top[0].multiselect(
        "Metrics",
        options,
        default=_csv_param("m", options, defaults) if subject is asked else defaults,
        format_func=series_label,
        key=f"mx_series_{subject.value}",  # each subject keeps its own choice
    )
    buckets = ["auto", *BUCKETS]
    bucket = top[1].selectbox(
        "Bucket", buckets, index=buckets.index(q.get("b", "auto")) if q.get("b") in buckets else 0
    )
    asked_groups = [g for g in (q.get("g") or "").split(",") if g]
    group_by, group_problem = group_by_multiselect(
        top[2],
        "Group by",
        valid(asked_groups)[0],
        key="mx_group",
        max_selections=MAX_GROUP_BY,
    )
    try:
        asked = min(max(int(q.get("top", MAX_TOP)), 1), MAX_TOP)
    except ValueError:
        asked = MAX_TOP
    limit = top[3].number_input(
        "Top groups",
        1,
        MAX_TOP,
        asked,
        disabled=not group_by,
        help=f'The largest groups by the first metric; the others are one "{OTHER}" line.',
    )
    compare = st.toggle("Compare with the previous period", value=q.get("cmp", "1") == "1")
    for key, value, default in (
        ("s", subject.value, DEFAULT_SUBJECT.value),
        ("m", ",".join(series), ",".join(defaults)),
        ("b", bucket, "auto"),
        ("g", ",".join(group_by), ""),
        ("cmp", "1" if compare else "0", "1"),
        ("top", str(limit), str(MAX_TOP)),
    ):
        if value != default:
            q[key] = value
        elif key in q:
            del q[key]
    if not series:
        return None, compare, "Pick at least one metric above."
    if group_problem:
        return None, compare, group_problem
    try:
        # no top-N limit: the engine keeps the `limit` largest groups (see `load`) and folds
        # the rest into "(other)", so the lines add up to the whole
        query = MetricQuery(
            series=tuple(series), bucket=bucket, group_by=tuple(group_by), zone=current_zone()
        )
    except UserError as exc:
        return None, compare, str(exc)
    st.session_state["mx_top"] = int(limit)
    return query, compare, None


def zoomed(spec: FilterSpec) -> FilterSpec:
    """The filter narrowed to the zoom the user clicked (kept in the URL as 'zoom')."""
    raw = st.query_params.get("zoom")
    if not raw:
        return spec
    try:
        start, end = (datetime.fromisoformat(t) for t in raw.split("~"))
        return spec.replace(relative=None, start=start, end=end)
    except (ValueError, UserError):
        del st.query_params["zoom"]
        return spec


def load(
    scope: Scope, query: MetricQuery, compare: bool
) -> tuple[MetricResult | None, MetricResult | None, str | None]:
    """The result and the previous period's, or a message saying what to change."""
    from observatory_core.ui import cached

    top = st.session_state.get("mx_top", MAX_TOP)
    try:
        result = cached.metrics(scope, query, max_groups=top)
        previous = (
            cached.metrics(scope, previous_of(query, result), max_groups=top) if compare else None
        )
    except UserError as exc:
        return None, None, str(exc)
    return result, previous, None


def previous_of(query: MetricQuery, result: MetricResult) -> MetricQuery:
    """The same query over the equal-length period just before the result's range."""
    length = result.end - result.start
    spec = query.filters.replace(relative=None, start=result.start - length, end=result.start)
    return replace(query, filters=spec)


def chart(result: MetricResult, previous: MetricResult | None) -> tuple[go.Figure, list[dict]]:
    """The figure (one panel per series) and, per trace, the group it draws (None: previous)."""
    rows = len(result.series)
    figure = make_subplots(
        rows=rows,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.08,
        subplot_titles=[_title(s, result.frame[s].to_list()) for s in result.series],
    )
    shift = result.end - result.start
    groups = groups_of(result)
    # each group's previous-period rows, found once for all its panels
    befores = [
        _part(previous.frame, result.group_by, part) if previous is not None else None
        for _, part in groups
    ]
    trace_groups: list[dict | None] = []
    colours = colors.assign([label for label, _ in groups])
    for row, name in enumerate(result.series, start=1):
        unit = METRICS[name.split(".")[0]].unit
        size, suffix = axis_scale(unit, result.frame[name].to_list())
        for (label, part), before in zip(groups, befores, strict=True):
            color = colours[label]
            values = part[name].to_list()
            buckets = part["bucket"].to_list()
            xs = local_series(part["bucket"], result.zone)  # drawn on the reader's clock
            ys = scaled(values, size)
            text = [format.by_unit(unit, v) for v in values]
            cut = [b in result.partial_buckets for b in buckets]
            figure.add_trace(
                go.Scatter(
                    **series_arrays(
                        xs, [None if c else v for v, c in zip(ys, cut, strict=True)], text
                    ),
                    name=label,
                    legendgroup=label,
                    showlegend=row == 1,
                    line=dict(color=color),
                    mode="lines+markers",  # clicking a point zooms in: plotly selects markers
                    marker=dict(size=4),
                    hovertemplate=HOVER,
                ),
                row=row,
                col=1,
            )
            other = any(part[g][0] in (OTHER, None) for g in result.group_by if g == "project")
            other = other or any(part[g][0] == OTHER for g in result.group_by)
            group = None if other else {g: part[g][0] for g in result.group_by}
            trace_groups.append(group)
            if any(cut):
                figure.add_trace(
                    partial_trace(result, label, color, buckets, ys, text, xs), row=row, col=1
                )
                trace_groups.append(group)
            if before is not None and before.height:
                figure.add_trace(
                    go.Scatter(
                        **series_arrays(
                            [local(t + shift, result.zone) for t in before["bucket"].to_list()],
                            scaled(before[name].to_list(), size),
                        ),
                        name=f"{label} (previous period)",
                        legendgroup=label,
                        showlegend=False,  # dashed: the caption says so
                        line=dict(color=color, dash="dash", width=1),
                        opacity=0.6,
                        hoverinfo="skip",
                    ),
                    row=row,
                    col=1,
                )
                trace_groups.append(None)
        format_axis(figure, row, unit, suffix)
    figure.update_layout(
        height=260 * rows + 60,
        margin=dict(l=10, r=10, t=40, b=10),
        legend=dict(orientation="v", x=1.02, y=1),
        hovermode="closest",
    )
    return figure, trace_groups


HOVER = "%{fullData.name}<br>%{x}<br><b>%{text}</b><extra></extra>"
# A line with more points than this is drawn without a marker on each where no point is
# clicked (a dashboard): thousands of markers cost the browser seconds to draw
# (docs/benchmarks.md, dashboard_ui) and hide the line; hovering still reads every point.
DENSE = 60


def series_arrays(xs: list, ys: list, text: list | None = None) -> dict:
    """A time series' x, y (and hover text) as numpy arrays: plotly checks a list point by
    point (about 10 ms per thousand points on the server) and an array at once, and sends
    the numbers packed. A missing value (None) becomes NaN, which plotly draws as the same
    gap."""
    out = {"x": np.array(xs, dtype="datetime64[us]"), "y": np.array(ys, dtype=float)}
    if text is not None:
        out["text"] = np.array(text, dtype=str)
    return out


def line_mode(points: int) -> str:
    """Lines with markers where each point can be told apart, lines alone where it cannot."""
    return "lines+markers" if points <= DENSE else "lines"


def partial_trace(
    result: MetricResult,
    label: str,
    color: str,
    buckets: list,
    ys: list,
    text: list,
    xs: list | None = None,
) -> go.Scatter:
    """The buckets that are not whole (`metrics.partial`), drawn dotted and lighter from their
    whole neighbour, with the covered share in the hover: a bucket still filling up reads as
    unfinished, not as a drop. The group's own line stops at its last whole bucket."""
    cut = [b in result.partial_buckets for b in buckets]
    near = [
        c or (i > 0 and cut[i - 1]) or (i + 1 < len(cut) and cut[i + 1]) for i, c in enumerate(cut)
    ]
    seconds = result.bucket_seconds or 1
    return go.Scatter(
        x=xs if xs is not None else buckets,
        y=[v if n else None for v, n in zip(ys, near, strict=True)],
        name=label,
        legendgroup=label,
        showlegend=False,
        line=dict(color=color, dash="dot"),
        opacity=0.55,
        mode="lines+markers",
        marker=dict(size=[7 if c else 0 for c in cut], symbol="circle-open"),
        text=[
            f"{t} ({covered_text(result.partial_buckets[b], seconds)})" if c else t
            for t, b, c in zip(text, buckets, cut, strict=True)
        ],
        hovertemplate=HOVER,
    )


def _title(series: str, values: list) -> str:
    """The panel's title in the unit its axis is drawn in (a p95 in seconds says "s")."""
    unit = METRICS[series.split(".")[0]].unit
    _, suffix = axis_scale(unit, values)
    return series_label(series).replace("(ms)", f"({suffix.strip()})" if suffix else "(ms)")


def caption(result: MetricResult, previous: bool) -> str:
    """How the numbers were computed, what the dashed lines and the "(other)" line are."""
    text = (
        result.explanation.replace(result.folded_note, "").strip()
        if result.folded_groups
        else result.explanation
    )
    if result.partial_buckets:
        text += (
            " Dotted, lighter points: buckets the range or the clock cuts short (they hold "
            "only part of their period; the hover says how much)."
        )
    if previous:
        text += " Dashed lines: the same group in the previous period, shifted onto this one."
    if result.folded_groups:
        text += (
            f' {result.folded_groups:,} smaller groups are drawn together as "{OTHER}"; raise '
            "Top groups (up to 10) or filter to see one of them."
        )
    return f"{text} {result.seconds * 1000:,.0f} ms."


def axis_scale(unit: str, values: list) -> tuple[float, str]:
    """Durations on an axis in the unit their typical value reads in (10,830 ms: seconds)."""
    if unit != "ms":
        return 1, ""
    size, word, _ = format.duration_unit(values)
    return size, f" {word}"


def scaled(values: list, size: float) -> list:
    return values if size == 1 else [None if v is None else v / size for v in values]


def format_axis(figure: go.Figure, row: int | None, unit: str, suffix: str) -> None:
    """The y axis in the unit (row None: a figure of one panel, as the Dashboards page's)."""
    where = {} if row is None else {"row": row, "col": 1}
    if unit == "usd":
        figure.update_yaxes(tickprefix="$", **where)
    elif unit == "ratio":
        figure.update_yaxes(tickformat=".1%", **where)
    elif unit == "ms":
        figure.update_yaxes(ticksuffix=suffix, **where)
    else:
        figure.update_yaxes(separatethousands=True, **where)


def groups_of(result: MetricResult) -> list[tuple[str, pl.DataFrame]]:
    if not result.group_by:
        return [("all", result.frame)]
    out = []
    for key, part in result.frame.group_by(list(result.group_by), maintain_order=True):
        words = [format.group_value(g, v) for g, v in zip(result.group_by, key, strict=True)]
        out.append((" / ".join(words), part))
    return out


def _part(frame: pl.DataFrame, group_by: tuple[str, ...], part: pl.DataFrame) -> pl.DataFrame:
    if not group_by:
        return frame
    keys = part.select(group_by).head(1)
    return frame.join(keys, on=list(group_by), how="semi", nulls_equal=True)


def point_filter(spec: FilterSpec, zoom: str, groups: dict) -> FilterSpec:
    """Exactly the spans behind a point: its bucket's time range and its group's values."""
    start, end = (datetime.fromisoformat(t) for t in zoom.split("~"))
    changes: dict = {"relative": None, "start": start, "end": end}
    for dim, value in groups.items():
        field = by_group(dim)
        if value is not None and field.filter is FilterKind.IN_LIST:
            changes[field.filter_keys()[0]] = (int(value) if field.type == "int" else str(value),)
        elif value is not None and (keyed := keyed_fields().get(dim.partition(":")[0])):
            # a tag or metadata key: the spans holding that value (tags "<key>:<value>")
            key = dim.partition(":")[2]
            if keyed.filter is FilterKind.TAGS:
                changes[f"{keyed.key or keyed.name}_all"] = (f"{key}:{value}",)
            elif keyed.filter is FilterKind.METADATA:
                changes[keyed.filter_keys()[0]] = ((key, str(value)),)
    return spec.replace(**changes)


def selection_zoom(event, result: MetricResult, trace_groups: list) -> tuple[str, dict] | None:
    """A box or a clicked point -> (the zoom range for the URL, the point's group or {})."""
    selection = getattr(event, "selection", None) or {}
    box = selection.get("box") or []
    if box and box[0].get("x"):
        low, high = sorted(as_instant(x, result.zone) for x in box[0]["x"][:2])
        return f"{max(low, result.start).isoformat()}~{min(high, result.end).isoformat()}", {}
    for point in selection.get("points") or []:
        groups = trace_groups[point.get("curve_number", 0)] if trace_groups else {}
        if groups is None:  # a previous-period line: nothing to open
            continue
        start = as_instant(point["x"], result.zone)
        end = start + timedelta(seconds=result.bucket_seconds or 0)
        if result.bucket_seconds:  # the bucket's own end: a zone's day may be 23 or 25 hours
            end = bucket_edges(
                start, start + timedelta(microseconds=1), result.bucket_seconds, result.zone
            )[-1]
        return f"{max(start, result.start).isoformat()}~{min(end, result.end).isoformat()}", groups
    return None


def is_empty(result: MetricResult) -> bool:
    """No value at all in the range (an all-zero count series still counts as data)."""
    if result.frame.is_empty():
        return True
    counts = [s for s in result.series if s.endswith(".count")]
    if counts:
        return result.frame.select(counts).sum_horizontal().sum() == 0
    return result.frame.select(result.series).drop_nulls().height == 0


def table(result: MetricResult) -> pl.DataFrame:
    """The numbers behind the chart, as stored (the CSV download keeps them exact)."""
    return result.frame.rename({s: series_label(s) for s in result.series})


def shown_table(result: MetricResult) -> tuple[pl.DataFrame, dict]:
    """The table on screen: group values in the user's words, each series formatted by unit."""
    frame = table(result).with_columns(
        pl.Series(g, [format.group_value(g, v) for v in result.frame[g].to_list()], pl.String)
        for g in result.group_by
    )
    units = {series_label(s): METRICS[s.split(".")[0]].unit for s in result.series}
    frame, config = format.table_columns(frame, units)
    for g in result.group_by:
        config[g] = st.column_config.TextColumn(g.replace("_id", "").replace("_", " ").capitalize())
    if result.partial_buckets and "bucket" in frame.columns:  # as the chart's lighter points say
        covered = result.partial_buckets
        notes = [
            covered_text(covered[b], result.bucket_seconds) if b in covered else ""
            for b in result.frame["bucket"].to_list()
        ]
        frame = frame.with_columns(pl.Series("Bucket covered", notes, pl.String))
        config["Bucket covered"] = st.column_config.TextColumn("Bucket covered")
    if "bucket" in frame.columns:  # on the reader's clock, as the chart draws it
        frame = frame.with_columns(
            pl.col("bucket").dt.convert_time_zone(result.zone.name).dt.replace_time_zone(None)
        )
    config["bucket"] = st.column_config.DatetimeColumn(
        f"Bucket ({result.zone.name})", format="YYYY-MM-DD HH:mm"
    )
    return frame, config
