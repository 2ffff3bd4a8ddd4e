"""Which span fields a list may show; which a role may see is `observatory_core.accounts.visibility`."""

from __future__ import annotations

from observatory_core.accounts.scope import Scope
from observatory_core.accounts.visibility import hidden_fields, require_fields, visible
from observatory_core.base.errors import UserError
from observatory_core.ingest.spanrows import SPAN_COLUMNS

__all__ = ["ALL_FIELDS", "DEFAULT_FIELDS", "KEY_FIELDS", "hidden_fields", "resolve_fields"]

ALL_FIELDS: tuple[str, ...] = ("id", *(c for c in SPAN_COLUMNS if c != "org_id"))
DEFAULT_FIELDS: tuple[str, ...] = (
    "start_time",
    "name",
    "operation",
    "provider",
    "model",
    "status",
    "duration_ms",
    "total_tokens",
    "total_cost_usd",
    "user_id",
    "environment",
    "trace_id",
    "span_id",
)
# Always fetched: the keyset cursor and the link to the detail need them.
KEY_FIELDS = ("id", "trace_id", "span_id", "start_time")


def resolve_fields(
    scope: Scope, wanted: tuple[str, ...] | list[str] | None, use: str = "show"
) -> tuple[str, ...]:
    """The asked-for fields, or the default set minus what the role may not see.

    A hidden field asked for by name is refused (403), not dropped: see `visibility`."""
    if not wanted:
        return visible(scope, DEFAULT_FIELDS)
    wanted = tuple(wanted)
    unknown = [f for f in wanted if f not in ALL_FIELDS]
    if unknown:
        raise UserError(f"Unknown field {unknown[0]!r}; choose from {', '.join(ALL_FIELDS)}.")
    require_fields(scope, wanted, use)
    return tuple(dict.fromkeys(wanted))
