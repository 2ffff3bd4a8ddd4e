"""Which span fields a list may show, and which a role may see (DESIGN.md section 6)."""

from __future__ import annotations

from observatory_core.errors import UserError
from observatory_core.permissions import Permission
from observatory_core.scope import Scope
from observatory_core.spanrows import SPAN_COLUMNS

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
COST_FIELDS = frozenset({"input_cost_usd", "output_cost_usd", "total_cost_usd", "cost_source"})
TEXT_FIELDS = frozenset({"input_text", "output_text"})
# Always fetched: the keyset cursor and the link to the detail need them.
KEY_FIELDS = ("id", "trace_id", "span_id", "start_time")


def hidden_fields(scope: Scope) -> frozenset[str]:
    hidden: set[str] = set()
    if not scope.can(Permission.COSTS_READ):
        hidden |= COST_FIELDS
    if not scope.can(Permission.TRACES_READ):
        hidden |= TEXT_FIELDS
    return frozenset(hidden)


def resolve_fields(scope: Scope, wanted: tuple[str, ...] | list[str] | None) -> tuple[str, ...]:
    """The asked-for fields (default set if none), minus what the role may not see."""
    wanted = tuple(wanted) if wanted else DEFAULT_FIELDS
    unknown = [f for f in wanted if f not in ALL_FIELDS]
    if unknown:
        raise UserError(f"Unknown field {unknown[0]!r}; choose from {', '.join(ALL_FIELDS)}.")
    hidden = hidden_fields(scope)
    return tuple(f for f in dict.fromkeys(wanted) if f not in hidden)
