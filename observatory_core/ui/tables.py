"""Span lists as dataframes with formatted columns (money, durations, status)."""

from __future__ import annotations

import polars as pl
import streamlit as st

from observatory_core.traces.query import Page
from observatory_core.ui import format
from observatory_core.ui.zone import local_frame, time_column

LABELS = {
    "start_time": "Start",  # on the reader's clock (`page_frame`, `styled`)
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


UNITS = {
    "duration_ms": "ms",
    "ttft_ms": "ms",
    "total_cost_usd": "usd",
    "input_cost_usd": "usd",
    "output_cost_usd": "usd",
    "total_tokens": "tokens",
    "input_tokens": "tokens",
    "output_tokens": "tokens",
    "span_count": "count",
    "error_count": "count",
}
# Long free text is cut in the cell (the whole text is in the trace detail below the table).
TEXT_CHARS = 120
WIDE = {"input_text", "output_text", "error_message", "tags", "metadata", "attributes"}


def page_frame(page: Page) -> pl.DataFrame:
    shown = [f for f in page.fields if f != "id"]
    rows = [{f: r.get(f) for f in shown} for r in page.rows]
    frame = pl.DataFrame(rows, infer_schema_length=None) if rows else pl.DataFrame()
    for column in ("tags", "metadata", "attributes"):
        if column in frame.columns:
            frame = frame.with_columns(pl.col(column).map_elements(str, return_dtype=pl.String))
    if "status" in frame.columns:
        frame = frame.with_columns(pl.col("status").cast(pl.String).replace(format.STATUS_WORDS))
    frame = local_frame(frame, "start_time")
    for column in ("provider", "model", "user_id", "environment", "operation"):
        if column in frame.columns and frame.schema[column] in (pl.String, pl.Null):
            frame = frame.with_columns(pl.col(column).cast(pl.String).fill_null(format.MISSING))
    for column in WIDE & set(frame.columns):
        if frame.schema[column] == pl.String:
            frame = frame.with_columns(pl.col(column).str.slice(0, TEXT_CHARS))
    return frame


# Pixel widths that fit the default columns beside the sidebar at 1400 px; longer values are
# cut in their cell (the row's trace opens below the table with everything).
WIDTHS = {
    "start_time": 112,
    "name": 105,
    "operation": 82,
    "provider": 76,
    "model": 106,
    "status": 52,
    "duration_ms": 66,
    "ttft_ms": 60,
    "total_tokens": 62,
    "total_cost_usd": 70,
    "user_id": 96,
    "environment": 70,
    "span_count": 52,
    "error_count": 52,
}
# In the table only to open a trace: a click on the row does that, so they are not shown.
HIDDEN = ("trace_id", "span_id")


def styled(frame: pl.DataFrame) -> tuple[pl.DataFrame, dict]:
    """The frame as shown (durations in one readable unit) and its column_config."""
    shown, config = format.table_columns(frame, UNITS, LABELS)
    for f in frame.columns:
        config.setdefault(f, st.column_config.Column(LABELS.get(f, f)))
    if "start_time" in frame.columns:  # on the reader's clock (`page_frame`)
        config["start_time"] = time_column("Start", fmt="MM-DD HH:mm:ss")
    for f, column in config.items():
        column["width"] = WIDTHS.get(f, 110)
    for f in HIDDEN:
        if f in config and len(frame.columns) > 2:
            config[f] = None
    return shown, config


def selectable(frame: pl.DataFrame, config: dict, key: str) -> list[int]:
    """A table whose rows a click selects (one at a time), as wide as the page and as tall as
    its rows; returns the selected rows' positions (empty when none is)."""
    event = st.dataframe(
        frame,
        column_config=config,
        hide_index=True,
        on_select="rerun",
        selection_mode="single-row",
        key=key,
        height=height(frame.height),
        width="stretch",
    )
    return list(event.selection.rows) if event and event.selection else []


def height(rows: int) -> int:
    """Tall enough for every row of the page: the page scrolls, not a box inside it."""
    return 38 + 35 * max(rows, 1) + 3
