"""How numbers and words read on screen, from one place: every tile, table, hover and legend
formats a value by its unit here (durations as ms/s/min/h, money by its size, ratios as %,
counts with separators) and shows a span's status the way a user says it.

Tables keep numbers as numbers (so a column still sorts by value): `table_columns` scales a
duration column to one unit that fits its values and gives Streamlit the matching format.
"""

from __future__ import annotations

import math

import polars as pl
import streamlit as st

MISSING = "—"
UNSET_STATUS = "unset"  # OpenTelemetry's default status: the call did not report an error
STATUS_WORDS = {"ok": "ok", "unset": "ok", "error": "error"}

# (milliseconds per unit, unit name, decimals) from the largest unit down
_DURATION_UNITS = ((3_600_000, "h", 1), (60_000, "min", 1), (1000, "s", 1), (1, "ms", 0))


def duration_ms(value: float | None) -> str:
    """10830.22 ms reads "10.8 s"; 95 s reads "1.6 min"; under a second stays in ms."""
    if value is None:
        return MISSING
    for size, unit, decimals in _DURATION_UNITS:
        if abs(value) >= size or size == 1:
            return f"{value / size:,.{decimals}f} {unit}"
    return MISSING  # unreachable: the ms step always matches


def duration_unit(values) -> tuple[float, str, int]:
    """One unit for a column of durations (ms): the one its typical (median) value reads in."""
    present = [abs(v) for v in values if v is not None and not _nan(v)]
    typical = sorted(present)[len(present) // 2] if present else 0
    for size, unit, decimals in _DURATION_UNITS:
        if typical >= size or size == 1:
            return size, unit, decimals
    return 1, "ms", 0


def _decimals_for_money(value: float) -> int:
    """Two decimals from a dollar up; below, three significant digits (at most 6 decimals)."""
    if value == 0 or abs(value) >= 1:
        return 2
    return min(6, 2 - math.floor(math.log10(abs(value))))


def money(value: float | None) -> str:
    """$1,234.50; $0.0123; $0.000456 (USD)."""
    if value is None:
        return MISSING
    if abs(value) >= 10_000:
        return f"${value:,.0f}"
    return f"${value:,.{_decimals_for_money(value)}f}"


def rate(value: float | None) -> str:
    """A ratio 0..1 as a percentage: 0.0312 reads "3.1%", 0.0004 reads "0.04%"."""
    if value is None:
        return MISSING
    pct = value * 100
    return f"{pct:.1f}%" if pct == 0 or abs(pct) >= 1 else f"{pct:.2f}%"


def count(value: float | None) -> str:
    return MISSING if value is None else f"{int(round(value)):,}"


def number(value: float | None) -> str:
    """A value without a known unit: three significant digits, separators."""
    if value is None:
        return MISSING
    if abs(value) >= 1000 or float(value).is_integer():
        return f"{value:,.0f}"
    return f"{value:,.3g}"


def change(value: float | None) -> str | None:
    """st.metric delta text; None hides the delta when there is nothing to compare. A change
    that would round to 0.0% keeps two significant digits, so it never reads as none."""
    if value is None:
        return None
    if value == 0:
        return "±0%"
    if abs(value) < 0.05:
        return f"{value:+.2g}%"
    return f"{value:+.1f}%"


BY_UNIT = {
    "ms": duration_ms,
    "usd": money,
    "ratio": rate,
    "count": count,
    "tokens": count,
    "users": count,
}


def by_unit(unit: str | None, value: float | None) -> str:
    return BY_UNIT.get(unit or "", number)(value)


def status(value: str | None) -> str:
    """UNSET (the OpenTelemetry default) is a successful call to the user: it reads "ok"."""
    return MISSING if value is None else STATUS_WORDS.get(value, value)


NO_VALUE = {
    "model": "(no model: agent, tool and other spans)",
    "provider": "(no provider)",
    "user_id": "(no user id)",
    "project": "(other)",  # the engine folds the project tail into NULL
}


def group_value(dimension: str, value) -> str:
    """A group's name as a person reads it: a missing value says what those spans are, the
    status in the user's words, OpenTelemetry's unset kept apart from ok (it is its own group)."""
    if value is None:
        return NO_VALUE.get(dimension, "(none)")
    if dimension == "status" and value == UNSET_STATUS:
        return "ok (status not set)"
    return str(value)


def status_filter(chosen: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """The stored statuses behind what the user picked: "ok" means ok and unset."""
    stored: list[str] = []
    for s in chosen:
        stored.extend(("ok", UNSET_STATUS) if s == "ok" else (s,))
    return tuple(dict.fromkeys(stored))


def status_choices(stored: tuple[str, ...] | list[str]) -> list[str]:
    """The filter widget's words for stored statuses (ok and unset both read "ok")."""
    return list(dict.fromkeys(status(s) for s in stored))


def _nan(v) -> bool:
    return isinstance(v, float) and math.isnan(v)


def _money_format(values) -> str:
    present = [abs(v) for v in values if v is not None and not _nan(v) and v != 0]
    typical = sorted(present)[len(present) // 2] if present else 1
    decimals = _decimals_for_money(typical)
    return f"$%,.{decimals}f"


def table_columns(
    frame: pl.DataFrame, units: dict[str, str], labels: dict[str, str] | None = None
) -> tuple[pl.DataFrame, dict]:
    """The frame with duration columns scaled to one readable unit, and its column_config:
    every number column formatted by its unit, headers saying the unit where the cell does not."""
    labels = labels or {}
    config: dict = {}
    scaled = []
    for name in frame.columns:
        unit = units.get(name)
        label = labels.get(name, name)
        if unit is None or not frame.schema[name].is_numeric():
            continue
        values = frame[name].to_list()
        if unit == "ms":
            size, word, decimals = duration_unit(values)
            if size != 1:
                scaled.append((pl.col(name) / size).alias(name))
            label = label.replace("(ms)", f"({word})")
            config[name] = st.column_config.NumberColumn(label, format=f"%,.{decimals}f {word}")
        elif unit == "usd":
            config[name] = st.column_config.NumberColumn(label, format=_money_format(values))
        elif unit == "ratio":
            scaled.append((pl.col(name) * 100).alias(name))
            config[name] = st.column_config.NumberColumn(label, format="%.2f%%")
        elif unit in ("count", "tokens", "users"):
            config[name] = st.column_config.NumberColumn(label, format="%,d")
        else:
            config[name] = st.column_config.NumberColumn(label, format="%,.3g")
    return (frame.with_columns(scaled) if scaled else frame), config
