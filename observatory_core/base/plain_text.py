"""Names people give things (dashboards, schedules, alert rules) checked once for what no store keeps.

PostgreSQL refuses a NUL in text (a 500 found by the API's schema fuzzing on an export
schedule's name), and a lone surrogate cannot be encoded for any store; other control
characters would print as garbage in the pages and messages that show the name.
"""

from __future__ import annotations

from observatory_core.base.errors import UserError


def text_problem(value: str) -> str | None:
    """What keeps `value` from being stored and shown as plain text (a control character, tab
    and newline aside, or a lone surrogate), said as the fix; None when it is plain."""
    if any(ord(c) < 32 and c not in "\n\t" for c in value):
        return "holds control characters; use plain text"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid text (a lone surrogate); use plain text"
    return None


def plain_name(value: str, what: str) -> str:
    """`value` stripped, or a `UserError` naming `what` and the fix (`text_problem`)."""
    value = value.strip()
    if problem := text_problem(value):
        raise UserError(f"{what} {problem}.")
    return value
