"""Rule widgets for the Alerts page: the editor (new or existing rule, threshold or anomaly)
with its 7-day backtest chart, and the rule list with mute, delete and each rule's webhook
delivery log."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import plotly.graph_objects as go
import polars as pl
import streamlit as st

from observatory_core.accounts.permissions import Permission
from observatory_core.accounts.scope import Scope
from observatory_core.accounts.visibility import metric_visible
from observatory_core.alerts.anomaly import (
    DEFAULT_SENSITIVITY,
    DEFAULT_WEEKS,
    DIRECTIONS,
    MAX_RULE_WEEKS,
    MIN_RULE_WEEKS,
)
from observatory_core.alerts.backtest import backtest
from observatory_core.alerts.rules import (
    COMPARATORS,
    SYSTEM_RULES,
    build_rule,
    create_rule,
    delete_rule,
    list_rules,
    mute_rule,
    update_rule,
)
from observatory_core.alerts.webhooks import condition, delivery_log
from observatory_core.base.errors import UserError
from observatory_core.filters.spec import FilterSpec
from observatory_core.metrics.catalog import METRICS
from observatory_core.ui import colors, format
from observatory_core.ui.group_choice import KEY_HELP
from observatory_core.ui.group_choice import options as group_options
from observatory_core.ui.session import engine, span_engine
from observatory_core.ui.zone import local_rows, local_series, time_column, time_label

WINDOWS = {
    "1 minute": 60,
    "5 minutes": 300,
    "15 minutes": 900,
    "1 hour": 3600,
    "6 hours": 21600,
    "1 day": 86400,
}
KIND_LABELS = {"threshold": "Above or below a number", "anomaly": "Unusual for this hour"}
DELIVERY_TIMES = ("created_at", "finished_at", "next_attempt_at")


def _series_choices(scope: Scope) -> list[str]:
    return [
        f"{name}.{agg.value}"
        for name, m in METRICS.items()
        if metric_visible(scope, name)
        for agg in m.aggregations
    ]


def _pick_rule(scope: Scope) -> dict | None:
    editable = [r for r in list_rules(engine(), scope) if not r["system_kind"]]
    options = [None, *(r["id"] for r in editable)]
    names = {r["id"]: r["name"] for r in editable}
    chosen = st.selectbox(
        "Rule", options, format_func=lambda i: names.get(i, "New rule"), key="rule_pick"
    )
    return next((r for r in editable if r["id"] == chosen), None)


def rule_editor(scope: Scope, spec: FilterSpec) -> None:
    """Create a rule, or edit one; backtest before saving. New rules take the sidebar filters;
    an edited rule keeps its own unless asked to take the sidebar's."""
    existing = _pick_rule(scope)
    d = existing or {
        "name": "",
        "series": "duration_ms.p95",
        "comparator": ">",
        "threshold": 2500,
        "window_s": 300,
        "group_by": None,
        "min_requests": 20,
        "pending_s": 60,
        "keep_firing_s": 120,
        "webhook_url": "",
        "kind": "threshold",
    }
    # outside the form, so the form shows the fields of the kind chosen
    kinds = list(KIND_LABELS)
    kind = st.radio(
        "Fires when the metric is",
        kinds,
        index=kinds.index(d.get("kind") or "threshold"),
        format_func=KIND_LABELS.get,
        horizontal=True,
        key=f"rule_kind_{existing['id'] if existing else 'new'}",
        help="Unusual for this hour: outside the range of the same hour of the week in the "
        "last weeks (median and median absolute deviation), so no number to pick.",
    )
    choices = _series_choices(scope)
    windows = list(WINDOWS.values())
    # a new anomaly rule starts at an hour: the hourly rollups answer its baseline, and an hour
    # holds enough requests to compare
    window_s = 3600 if kind == "anomaly" and not existing else d["window_s"]
    with st.form(f"rule_form_{existing['id'] if existing else 'new'}"):
        name = st.text_input("Name", d["name"], placeholder="p95 latency of gpt-4o in production")
        if kind == "anomaly":
            c1, c2, c3, c4 = st.columns([3, 1, 1, 1])
        else:
            c1, c2, c3 = st.columns([3, 1, 2])
        series = c1.selectbox(
            "Metric", choices, index=choices.index(d["series"]) if d["series"] in choices else 0
        )
        comparator, threshold, anomaly = d["comparator"], d["threshold"], {}
        if kind == "anomaly":
            anomaly = _anomaly_fields(d, c2, c3, c4)
        else:
            shown = d["comparator"] if d["comparator"] in COMPARATORS else ">"
            comparator = c2.selectbox("Is", list(COMPARATORS), index=list(COMPARATORS).index(shown))
            threshold = c3.text_input(
                "Threshold",
                f"{d['threshold']:g}",
                help="A number in the metric's unit: ms, USD, a rate from 0 to 1 ...",
            )
        c1, c2, c3, c4 = st.columns(4)
        window = c1.selectbox(
            "Window",
            windows,
            index=windows.index(window_s) if window_s in windows else 1,
            format_func=lambda w: next(k for k, v in WINDOWS.items() if v == w),
        )
        dims = [None, *group_options([d["group_by"]] if d["group_by"] else [])]
        group_by = c2.selectbox(
            "One alert per",
            dims,
            index=dims.index(d["group_by"]) if d["group_by"] in dims else 0,
            format_func=lambda g: g or "(whole rule)",
            accept_new_options=True,  # "tag:customer": one alert per customer (rules refuse bad keys)
            help=KEY_HELP,
        )
        min_requests = c3.number_input(
            "Minimum requests",
            0,
            10**6,
            d["min_requests"],
            help="Below this many requests in the window the rule does not judge (an unusual-"
            "for-this-hour rule also leaves out past weeks below it).",
        )
        pending = c4.number_input(
            "Pending (s)", 0, 86400, d["pending_s"], help="How long it must breach before it fires."
        )
        c1, c2 = st.columns([1, 3])
        keep = c1.number_input(
            "Keep firing (s)",
            0,
            86400,
            d["keep_firing_s"],
            help="How long it keeps firing after the breach ends.",
        )
        webhook = c2.text_input(
            "Webhook URL (optional)",
            d["webhook_url"] or "",
            placeholder="https://hooks.slack.com/services/...",
        )
        use_sidebar = True
        if existing:
            st.caption(
                f"Its filters: {FilterSpec.from_json(existing['filter_json']).to_query_params() or 'none'}"
            )
            use_sidebar = st.checkbox("Replace its filters with the sidebar's")
        else:
            st.caption(
                "The rule uses the filters in the sidebar (their time range is replaced by the window)."
            )
        tried = st.form_submit_button("Backtest (last 7 days)")
        saved = st.form_submit_button("Save rule", type="primary")
    if not (tried or saved):
        return
    filters = spec if use_sidebar else FilterSpec.from_json(existing["filter_json"])
    try:
        rule = build_rule(
            name=name or "backtest",
            series=series,
            comparator=comparator,
            threshold=threshold,
            window_s=window,
            filters=filters,
            group_by=group_by,
            min_requests=min_requests,
            pending_s=pending,
            keep_firing_s=keep,
            webhook_url=webhook,
            kind=kind,
            **anomaly,
        )
        if saved:
            if not name:
                raise UserError("Name the rule before saving it.")
            if existing:
                update_rule(engine(), scope, existing["id"], rule)
            else:
                create_rule(engine(), scope, rule)
            st.success(
                f"Rule {rule.name!r} saved; the worker evaluates it every few seconds.",
                icon=":material/check_circle:",
            )
        else:
            with st.spinner("Replaying the last 7 days…"):
                _backtest_chart(rule, backtest(span_engine(), scope, rule))
    except UserError as exc:
        st.error(str(exc), icon=":material/error:")


def _anomaly_fields(d: dict, c2, c3, c4) -> dict:
    """The anomaly rule's parameters: direction, sensitivity and weeks of baseline."""
    directions = list(DIRECTIONS)
    return {
        "direction": c2.selectbox(
            "Direction",
            directions,
            index=directions.index(d.get("direction") or "above"),
            help="above: fires when higher than usual; below: lower; both: either.",
        ),
        "sensitivity": c3.number_input(
            "Sensitivity",
            0.5,
            20.0,
            float(d.get("sensitivity") or DEFAULT_SENSITIVITY),
            step=0.5,
            help="How many robust deviations (1.4826 x the median absolute deviation, at least "
            "20% of the usual value) from the usual value count as unusual. Higher: fewer alerts.",
        ),
        "baseline_weeks": c4.number_input(
            "Weeks",
            MIN_RULE_WEEKS,
            MAX_RULE_WEEKS,
            int(d.get("baseline_weeks") or DEFAULT_WEEKS),
            help="The baseline: the same window at the same time of the week in this many past weeks.",
        ),
    }


def _backtest_chart(rule, result) -> None:
    st.markdown(
        f"**Would have fired {result.fired} time(s)** in 7 days, firing {result.firing_share:.1%} of the time (evaluated on {result.bucket} buckets)."
    )
    if rule.anomaly:
        frame = result.frame
        judged = frame["median"].is_not_null().sum() / frame.height if frame.height else 0.0
        if judged < 1:
            st.caption(
                f"{judged:.0%} of the buckets had a baseline: it needs the same hour of the week "
                f"in at least 2 of the last {rule.baseline_weeks} weeks, each with the minimum "
                "requests; without one the rule does not judge."
            )
    fig = go.Figure()
    metric = METRICS.get(rule.series.split(".")[0])
    unit = metric.unit if metric else None
    if rule.anomaly:
        _fired_at(result, unit)
    parts = result.frame.partition_by("group", as_dict=True)
    colours = colors.assign([group[0] or rule.series for group in parts])
    for group, part in parts.items():
        label = group[0] or rule.series
        fig.add_scatter(
            x=local_series(part["bucket"]),  # the reader's clock
            y=part["value"].to_list(),
            mode="lines",
            name=label,
            line={"color": colours[label]},
            text=[format.by_unit(unit, v) for v in part["value"].to_list()],
            hovertemplate="%{fullData.name}<br>%{x}<br><b>%{text}</b><extra></extra>",
        )
        hot = part.filter(pl.col("firing"))
        fig.add_scatter(
            x=local_series(hot["bucket"]),
            y=hot["value"].to_list(),
            mode="markers",
            marker={"color": "#d93f0b"},
            name=f"firing {label}".strip(),
            showlegend=False,
        )
        if rule.anomaly:  # the usual range, bucket by bucket
            for edge in ("low", "high"):
                fig.add_scatter(
                    x=local_series(part["bucket"]),
                    y=part[edge].to_list(),
                    mode="lines",
                    line={"color": colours[label], "dash": "dot", "width": 1},
                    name=f"usual {edge} {label}".strip(),
                    showlegend=False,
                    hoverinfo="skip",
                )
    if not rule.anomaly:
        fig.add_hline(
            y=rule.threshold,
            line_dash="dash",
            line_color="#d93f0b",
            annotation_text=f"threshold {format.by_unit(unit, rule.threshold)}",
        )
    fig.update_layout(
        height=320, margin={"l": 10, "r": 10, "t": 30, "b": 10}, yaxis_title=rule.series
    )
    st.plotly_chart(fig, use_container_width=True)


def _fired_at(result, unit: str | None) -> None:
    """When an anomaly rule would have started firing (the window, on the reader's clock), its
    value against what was usual then."""
    frame = result.frame.sort("group", "bucket")
    starts = frame.filter(
        pl.col("firing") & ~pl.col("firing").shift(1, fill_value=False).over("group")
    )
    if starts.is_empty():
        return
    shown = pl.DataFrame(
        {
            "window from": local_series(starts["bucket"]),
            "where": starts["group"].to_list(),
            "value": [format.by_unit(unit, v) for v in starts["value"].to_list()],
            "usual": [format.by_unit(unit, v) for v in starts["median"].to_list()],
        }
    )
    st.dataframe(shown, hide_index=True)


def rules_list(scope: Scope) -> None:
    rules = list_rules(engine(), scope)
    manage = scope.can(Permission.ALERTS_MANAGE)
    now = datetime.now(UTC)
    for rule in rules:
        muted = rule["muted_until"] is not None and rule["muted_until"] > now
        metric = METRICS.get(rule["series"].split(".")[0])
        unit = metric.unit if metric else None
        threshold = "(hidden)" if rule["values_hidden"] else format.by_unit(unit, rule["threshold"])
        test = f"{rule['comparator']} {threshold}"
        if rule["kind"] == "anomaly":
            test = condition(rule)
        title = f"{rule['name']} · {rule['series']} {test} over {rule['window_s'] // 60} min"
        muted_text = f" · 🔕 muted until {time_label(rule['muted_until'])}" if muted else ""
        with st.expander(title + muted_text):
            if rule["system_kind"]:
                st.caption(SYSTEM_RULES[rule["system_kind"]].help)
            else:
                st.caption(
                    f"Filters: {FilterSpec.from_json(rule['filter_json']).to_query_params() or 'none'} · one alert per {rule['group_by'] or 'rule'} · min {rule['min_requests']} requests · pending {rule['pending_s']} s · keep firing {rule['keep_firing_s']} s"
                )
            if manage:
                c1, c2, c3 = st.columns(3)
                if c1.button("Unmute" if muted else "Mute 1 hour", key=f"mute_{rule['id']}"):
                    mute_rule(
                        engine(), scope, rule["id"], None if muted else now + timedelta(hours=1)
                    )
                    st.rerun()
                if not rule["system_kind"] and c2.button("Delete", key=f"delete_{rule['id']}"):
                    delete_rule(engine(), scope, rule["id"])
                    st.rerun()
            if rule["webhook_url"]:
                log = delivery_log(engine(), scope, rule["id"], limit=20)
                st.markdown("**Webhook deliveries**")
                st.dataframe(
                    local_rows(log, *DELIVERY_TIMES) or [{"status": "none yet"}],
                    hide_index=True,
                    column_config={
                        t: time_column(t.removesuffix("_at").replace("_", " ").capitalize())
                        for t in DELIVERY_TIMES
                    },
                )
