"""How numbers read on screen: money, durations, rates and changes."""

from __future__ import annotations


def money(value: float | None) -> str:
    if value is None:
        return "—"
    return f"${value:,.2f}" if abs(value) >= 1 else f"${value:,.4f}"


def duration_ms(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value / 1000:,.2f} s" if value >= 1000 else f"{value:,.0f} ms"


def rate(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.2f}%"


def count(value: float | None) -> str:
    return "—" if value is None else f"{int(round(value)):,}"


def change(value: float | None) -> str | None:
    """st.metric delta text; None hides the delta when there is nothing to compare."""
    return None if value is None else f"{value:+.1f}%"
