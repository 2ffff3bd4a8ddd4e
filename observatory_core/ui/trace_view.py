"""One trace on screen: totals, a waterfall timeline and every span's details."""

from __future__ import annotations

import json

import plotly.graph_objects as go
import streamlit as st

from observatory_core.traces.detail import TraceDetail
from observatory_core.ui import format
from observatory_core.ui.zone import time_label

FOLD = 1_500  # characters shown before "show all"
COLORS = {"ok": "#4E79A7", "error": "#E15759"}
ICONS = {"ok": ":material/check_circle:", "error": ":material/error:"}


def waterfall(detail: TraceDetail) -> go.Figure:
    rows = detail.spans
    labels = [f"{'· ' * r['depth']}{r['name']} #{i}" for i, r in enumerate(rows)]
    offsets = [(r["start_time"] - detail.start).total_seconds() * 1000 for r in rows]
    figure = go.Figure(
        go.Bar(
            y=labels,
            x=[r["duration_ms"] for r in rows],
            base=offsets,
            orientation="h",
            marker_color=[COLORS.get(format.status(r["status"]), "#9D9DA3") for r in rows],
            hovertext=[
                f"{r['operation']} · {format.duration_ms(r['duration_ms'])} · {format.status(r['status'])}"
                for r in rows
            ],
            hoverinfo="text",
        )
    )
    figure.update_layout(
        height=max(220, 28 * len(rows) + 60),
        margin=dict(l=10, r=10, t=30, b=10),
        yaxis=dict(autorange="reversed"),
        xaxis_title="ms since trace start",
        xaxis_ticksuffix=" ms",
        title="Timeline",
    )
    return figure


def _readable(facts: dict) -> dict:
    """Numbers with their unit and the status in the user's words."""
    shown = dict(facts)
    for key, unit in (("ttft_ms", "ms"), ("total_cost_usd", "usd")):
        if key in shown:
            shown[key] = format.by_unit(unit, shown[key])
    for key in ("input_tokens", "output_tokens"):
        if key in shown:
            shown[key] = format.count(shown[key])
    if "status" in shown:
        shown["status"] = format.status(shown["status"])
    return shown


def _text(label: str, value: str | None) -> None:
    if not value:
        return
    st.markdown(f"**{label}**")
    st.text(value[:FOLD] + ("…" if len(value) > FOLD else ""))
    if len(value) > FOLD:
        with st.popover(f"Show all {len(value):,} characters"):
            st.text(value)


def duplicate_link(row: dict) -> str:
    """Markdown naming the span that counts instead of this one, linked to its trace."""
    target, trace = row["duplicate_of"], row.get("duplicate_trace_id")
    if not trace:
        return f"Duplicate of span `{target}`"
    return f"Duplicate of span [`{target}`](traces?trace={trace}) (trace `{trace}`)"


def duplicate_notice(row: dict) -> None:
    st.info(
        f"{duplicate_link(row)}: the same call, sent again by another instrumentation "
        f"(`{row.get('scope_name') or 'unknown scope'}`). It is kept here but counted in no "
        "figure; the span it names counts.",
        icon=":material/content_copy:",
    )


def show(detail: TraceDetail) -> None:
    st.subheader(f"Trace {detail.trace_id}")
    tiles = [
        ("Duration", format.duration_ms(detail.duration_ms)),
        ("Spans", format.count(detail.span_count)),
        ("Tokens", format.count(detail.total_tokens)),
        ("Errors", format.count(detail.error_count)),
    ]
    if detail.total_cost_usd is not None:
        tiles.insert(3, ("Cost", format.money(detail.total_cost_usd)))
    for column, (label, value) in zip(st.columns(len(tiles)), tiles, strict=True):
        column.metric(label, value)
    st.caption(
        f"Started {time_label(detail.start, seconds=True)}, ended "
        f"{time_label(detail.end, seconds=True)}"
    )
    if detail.omitted:
        st.warning(
            f"This trace has {detail.span_count:,} spans; the first {len(detail.spans):,} by start "
            "time are shown (totals above cover all of them). Filter the Traces list by this "
            "trace id to page through the rest.",
            icon=":material/content_cut:",
        )
    st.plotly_chart(waterfall(detail), width="stretch")
    for r in detail.spans:
        icon = ICONS.get(format.status(r["status"]), ":material/radio_button_unchecked:")
        title = f"{'— ' * r['depth']}{r['name']} · {format.duration_ms(r['duration_ms'])}"
        if r.get("duplicate_of"):
            title += f" · duplicate of {r['duplicate_of']}"
        with st.expander(title, expanded=r["status"] == "error", icon=icon):
            if r.get("duplicate_of"):
                duplicate_notice(r)
            if r["status"] == "error":
                st.error(
                    f"{r.get('error_type') or 'Error'}: {r.get('error_message') or 'no message'}"
                )
                if trace := (r.get("attributes") or {}).get("exception.stacktrace"):
                    with st.popover("Stack trace"):
                        st.code(trace, language=None)
            facts = {
                k: r.get(k)
                for k in (
                    "operation",
                    "provider",
                    "model",
                    "environment",
                    "user_id",
                    "session_id",
                    "status",
                    "input_tokens",
                    "output_tokens",
                    "ttft_ms",
                    "total_cost_usd",
                    "cost_source",
                    "finish_reason",
                    "span_id",
                )
                if r.get(k) is not None
            }
            st.json(_readable(facts), expanded=True)
            _text("Input", r.get("input_text"))
            _text("Output", r.get("output_text"))
            if r.get("text_truncated"):
                st.caption("Text was cut at ingestion (see OBSERVATORY_TEXT_MAX_CHARS).")
            extra = {
                "tags": r.get("tags"),
                "metadata": r.get("metadata"),
                "attributes": r.get("attributes"),
            }
            st.code(json.dumps(extra, indent=2, default=str), language="json")
