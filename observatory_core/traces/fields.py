"""Which span fields a list or an export may show (every declared field, `semantic.fields`,
an expression one too); which a role may see is `observatory_core.accounts.visibility`."""

from __future__ import annotations

from observatory_core.accounts.scope import Scope
from observatory_core.accounts.visibility import hidden_fields, require_fields, visible
from observatory_core.base.errors import UserError
from observatory_core.semantic.field_lookups import (
    Names,
    derived,
    field_named,
    keyed_fields,
    keyed_problem,
    listed,
)
from observatory_core.storage.schema import spans

__all__ = [
    "ALL_FIELDS",
    "DEFAULT_FIELDS",
    "KEY_FIELDS",
    "field_column",
    "hidden_fields",
    "resolve_fields",
]


def _all_fields() -> tuple[str, ...]:
    """The declared listable fields: stored columns in the table's order, then expressions."""

    def compute() -> tuple[str, ...]:
        names = set(listed())
        stored = tuple(c.name for c in spans.columns if c.name in names)
        return (*stored, *(n for n in listed() if n not in stored))

    return derived("all_fields", compute)


ALL_FIELDS: Names = Names(_all_fields)
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


def field_column(name: str):
    """The SQL of a listable field, labelled with its name (an expression field too, and one
    key of a keyed JSON field, "metadata:customer")."""
    field = field_named(name)
    return spans.c[name] if field.plain else field.expression(spans.c).label(name)


def resolve_fields(
    scope: Scope, wanted: tuple[str, ...] | list[str] | None, use: str = "show"
) -> tuple[str, ...]:
    """The asked-for fields, or the default set minus what the role may not see.

    A hidden field asked for by name is refused (403), not dropped: see `visibility`."""
    if not wanted:
        return visible(scope, DEFAULT_FIELDS)
    wanted = tuple(wanted)
    known = ALL_FIELDS
    unknown = [f for f in wanted if f not in known and keyed_problem(f)]
    if unknown:
        keyed = ", ".join(f"{p}:<key>" for p in keyed_fields())
        raise UserError(
            f"Unknown field {unknown[0]!r}; choose from {', '.join(ALL_FIELDS)}, or {keyed}."
        )
    require_fields(scope, wanted, use)
    return tuple(dict.fromkeys(wanted))
