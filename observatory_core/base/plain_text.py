"""Names people give things (schedules, alert rules) checked once for what no store keeps.

PostgreSQL refuses a NUL in text (a 500 found by the API's schema fuzzing on an export
schedule's name), and a lone surrogate cannot be encoded for any store; other control
characters would print as garbage in the pages and messages that show the name.
"""

from __future__ import annotations

from observatory_core.base.errors import UserError


def plain_name(value: str, what: str) -> str:
    """`value` stripped, or a `UserError` saying what to fix when it holds a control character
    (tab and newline aside) or is not valid text."""
    value = value.strip()
    if any(ord(c) < 32 and c not in "\n\t" for c in value):
        raise UserError(f"{what} holds control characters; use plain text.")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise UserError(f"{what} is not valid text (a lone surrogate); use plain text.") from None
    return value
