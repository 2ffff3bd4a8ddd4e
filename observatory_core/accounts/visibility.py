"""What a role may see, asked the same way on every path.

Each span field declares the permission needed to see it (`semantic.fields`); this module
applies it wherever a field can appear, so no path can show, sort by, filter on, chart or
export a field the caller may not see:

- named explicitly (a column, a sort, a filter, a search, a metric, a group-by, an export's
  fields): refused with `PermissionDenied` (HTTP 403) naming the field and the reason;
- left to a default (the default columns of a list, an export or the live feed): omitted.

Refusing what was asked for by name, instead of dropping it quietly, tells a script why its
answer lacks a column and keeps a filter from being silently ignored (which would answer a
different question than the one asked).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from observatory_core.accounts.permissions import SEES
from observatory_core.accounts.scope import Scope
from observatory_core.base.errors import PermissionDenied
from observatory_core.semantic.field_lookups import (
    DIMENSION_FIELDS,
    FIELD_NEEDS,
    FILTER_READS,
    fields_hidden_from,
    filters_set_in,
    keyed_fields,
)
from observatory_core.semantic.metrics import METRICS

if TYPE_CHECKING:  # a type only: filters sit a floor above accounts
    from observatory_core.filters.spec import FilterSpec


def hidden_fields(scope: Scope) -> frozenset[str]:
    """The span fields the caller's role may not see."""
    return fields_hidden_from(scope.role)


def can_see(scope: Scope, field: str) -> bool:
    return field not in hidden_fields(scope)


def visible(scope: Scope, fields: Iterable[str]) -> tuple[str, ...]:
    """`fields` minus the hidden ones, in order: for default column sets."""
    hidden = hidden_fields(scope)
    return tuple(f for f in fields if f not in hidden)


def why_hidden(field: str) -> str:
    """`costs (costs:read)`: what the role lacks to see `field`."""
    needs = FIELD_NEEDS[field]
    return f"{SEES.get(needs, needs.value)} ({needs.value})"


def refusal(scope: Scope, field: str, use: str) -> PermissionDenied:
    return PermissionDenied(
        f"Cannot {use} {field}: your role ({scope.role.value}) cannot see "
        f"{why_hidden(field)}. Leave it out, or ask an admin of your org for access."
    )


def require_fields(scope: Scope, fields: Iterable[str], use: str) -> None:
    """Refuse the first hidden field among `fields`; `use` says how it was asked for
    ("show", "sort by", "export" ...)."""
    hidden = hidden_fields(scope)
    for field in fields:
        if field in hidden:
            raise refusal(scope, field, use)


def filter_allowed(scope: Scope, name: str) -> bool:
    """Whether the role may use the filter `name` (the sidebar offers only these)."""
    return all(can_see(scope, f) for f in FILTER_READS.get(name, ()))


def hidden_filters(scope: Scope, spec: FilterSpec | str | Mapping[str, Any]) -> dict[str, str]:
    """The filters that read a hidden field, each with the field it reads. `spec`: a
    `FilterSpec`, or one stored as JSON (an export job's, an alert rule's)."""
    hidden = hidden_fields(scope)
    out: dict[str, str] = {}
    if isinstance(spec, str | Mapping):
        read = filters_set_in(json.loads(spec) if isinstance(spec, str) else spec)
    else:
        read = spec.fields_read()
    for name, reads in read.items():
        for field in reads:
            if field in hidden:
                out[name] = field
                break
    return out


def require_filters(scope: Scope, spec: FilterSpec | str | Mapping[str, Any]) -> None:
    """Refuse a filter (or search) on a field the role may not see: its answer would reveal
    the hidden values by bisection even though they are never shown."""
    for name, field in hidden_filters(scope, spec).items():
        raise PermissionDenied(
            f"Filter '{name}' reads {field}, and your role ({scope.role.value}) cannot see "
            f"{why_hidden(field)}; remove that filter."
        )


def require_series(scope: Scope, series: Iterable[str]) -> None:
    """Refuse a metric computed from a hidden field ('total_cost.sum' for a viewer)."""
    hidden = hidden_fields(scope)
    for name in series:
        metric = METRICS.get(str(name).split(".")[0])
        for field in metric.reads if metric else ():
            if field in hidden:
                raise PermissionDenied(
                    f"Cannot chart {name}: it is computed from {field}, and your role "
                    f"({scope.role.value}) cannot see {why_hidden(field)}. "
                    "Pick a metric without it."
                )


def metric_visible(scope: Scope, metric: str) -> bool:
    """Whether the role may chart `metric` (the pages offer only these)."""
    return all(can_see(scope, f) for f in METRICS[metric].reads)


def require_group_by(scope: Scope, group_by: Iterable[str]) -> None:
    for dim in group_by:
        keyed = keyed_fields().get(dim.partition(":")[0])  # "tag:<key>" reads the tags
        field = DIMENSION_FIELDS.get(dim, keyed.name if keyed else dim)
        if not can_see(scope, field):
            raise refusal(scope, field, "group by")


def require_metric_query(scope: Scope, query) -> None:
    """Everything a `MetricQuery` reads: its series (with having and sort), group-bys, filters."""
    require_series(scope, query.all_series)
    require_group_by(scope, query.group_by)
    require_filters(scope, query.filters)


def export_refusal(scope: Scope, job: dict) -> str | None:
    """Why the caller may not download `job`'s file (None: they may).

    Refused rather than served without the hidden columns: the file is written once and its
    checksum published, its rows may have been chosen by a hidden filter (a cost range, a text
    search) that no column stripping can undo, and rewriting a gzip or Parquet file per reader
    would cost a full pass over it.
    """
    hidden = hidden_fields(scope)
    columns = [f for f in job.get("fields") or () if f in hidden]
    if columns:
        return (
            f"Export {job['id']} holds {', '.join(columns)}, and your role "
            f"({scope.role.value}) cannot see {why_hidden(columns[0])}; start an export "
            "of your own with the fields you may see."
        )
    filters = hidden_filters(scope, job["filter_json"])
    if filters:
        name, field = next(iter(filters.items()))
        return (
            f"Export {job['id']} was selected by the filter '{name}' on {field}, and your role "
            f"({scope.role.value}) cannot see {why_hidden(field)}; start an export of "
            "your own without that filter."
        )
    return None


def rule_values_hidden(scope: Scope, series: str, filter_json: str | None) -> bool:
    """Whether an alert rule's values (its threshold, each evaluated value) derive from a field
    the caller may not see: a budget rule on total_cost for a viewer, a rule filtered by a
    text search for billing. The Alerts page and the live feed then show the state, not the
    numbers."""
    try:
        require_series(scope, (series,))
        if filter_json:
            require_filters(scope, filter_json)
    except PermissionDenied:
        return True
    return False
