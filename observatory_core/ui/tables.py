"""Span lists as dataframes with formatted columns (money, durations, status)."""

from __future__ import annotations

import polars as pl
import streamlit as st

from observatory_core.traces.query import Page

LABELS = {
    "start_time": "Start (UTC)",
    "name": "Name",
    "operation": "Operation",
    "provider": "Provider",
    "model": "Model",
    "status": "Status",
    "duration_ms": "Duration",
    "ttft_ms": "TTFT",
    "total_tokens": "Tokens",
    "input_tokens": "In tokens",
    "output_tokens": "Out tokens",
    "total_cost_usd": "Cost",
    "input_cost_usd": "In cost",
    "output_cost_usd": "Out cost",
    "user_id": "User",
    "session_id": "Session",
    "environment": "Env",
    "trace_id": "Trace",
    "span_id": "Span",
    "span_count": "Spans",
    "error_count": "Errors",
    "input_text": "Input",
    "output_text": "Output",
    "error_type": "Error type",
    "finish_reason": "Finish",
}


def page_frame(page: Page) -> pl.DataFrame:
    shown = [f for f in page.fields if f != "id"]
    rows = [{f: r.get(f) for f in shown} for r in page.rows]
    frame = pl.DataFrame(rows, infer_schema_length=None) if rows else pl.DataFrame()
    for column in ("tags", "metadata", "attributes"):
        if column in frame.columns:
            frame = frame.with_columns(pl.col(column).map_elements(str, return_dtype=pl.String))
    return frame


def column_config(fields: tuple[str, ...]) -> dict:
    config: dict = {f: st.column_config.Column(LABELS.get(f, f)) for f in fields}
    for f in ("total_cost_usd", "input_cost_usd", "output_cost_usd"):
        config[f] = st.column_config.NumberColumn(LABELS[f], format="$%.5f")
    for f in ("duration_ms", "ttft_ms"):
        config[f] = st.column_config.NumberColumn(LABELS[f], format="%.0f ms")
    config["start_time"] = st.column_config.DatetimeColumn(
        LABELS["start_time"], format="YYYY-MM-DD HH:mm:ss.SSS"
    )
    return {k: v for k, v in config.items() if k in fields}
