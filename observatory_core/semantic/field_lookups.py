"""The names and tables derived from `FIELDS` (`fields.py`): the filter keys and the fields
they read, the group-bys (declared, and one key of a keyed JSON field: "tag:<key>"), what the
rollups carry and which fields a role may not see. Each is computed at each use, never copied
at import, so a field registered at run time is seen everywhere."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from typing import Any

from observatory_core.accounts.permissions import ROLE_PERMISSIONS, Permission, Role
from observatory_core.semantic.field_declaration import KEY_SQL, Field, FilterKind, key_value
from observatory_core.semantic.fields import FIELDS


class Names(Sequence[str], AbstractSet[str]):
    """An ordered set of names computed from `FIELDS` whenever it is read."""

    def __init__(self, compute: Callable[[], tuple[str, ...]]) -> None:
        self._compute = compute

    def __getitem__(self, index):  # type: ignore[override]
        return self._compute()[index]

    def __len__(self) -> int:
        return len(self._compute())

    def __iter__(self) -> Iterator[str]:
        return iter(self._compute())

    def __contains__(self, name: object) -> bool:
        return name in self._compute()

    def __repr__(self) -> str:
        return repr(self._compute())

    __hash__ = None  # type: ignore[assignment]


class Table(Mapping[str, Any]):
    """A mapping computed from `FIELDS` whenever it is read."""

    def __init__(self, compute: Callable[[], dict[str, Any]]) -> None:
        self._compute = compute

    def __getitem__(self, key: str) -> Any:
        return self._compute()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._compute())

    def __len__(self) -> int:
        return len(self._compute())

    def __repr__(self) -> str:
        return repr(self._compute())


_memo: dict[str, tuple[tuple[Field, ...], Any]] = {}


def derived(name: str, compute: Callable[[], Any]) -> Any:
    """`compute()`, kept until `FIELDS` changes (read on every request, so not rebuilt each
    time; a field registered or removed at run time is seen at the next read)."""
    stamp = tuple(FIELDS.values())
    hit = _memo.get(name)
    if hit is not None and hit[0] == stamp:
        return hit[1]
    value = compute()
    _memo[name] = (stamp, value)
    return value


def filtered() -> tuple[Field, ...]:
    """The fields that can be filtered on, in declaration order."""
    return derived(
        "filtered",
        lambda: tuple(f for f in FIELDS.values() if f.filter is not FilterKind.NONE),
    )


def filter_keys() -> dict[str, Field]:
    """Every filter key (as in `FilterSpec`, links and the API) and the field it filters.
    Shared: do not change it."""
    return derived("filter_keys", lambda: {key: f for f in filtered() for key in f.filter_keys()})


# The keys of a filter's time window; they read start_time, which every role sees.
TIME_KEYS = ("relative", "start", "end")


def _reads() -> dict[str, tuple[str, ...]]:
    def compute() -> dict[str, tuple[str, ...]]:
        out: dict[str, tuple[str, ...]] = {k: ("start_time",) for k in TIME_KEYS}
        out.update({k: f.filter_reads() for k, f in filter_keys().items()})
        return out

    return derived("filter_reads", compute)


# The span field(s) each filter reads. A filter on a field a role may not see would let it
# bisect the hidden values (min_cost_usd=0.05 then 0.025 ...), so `accounts.visibility`
# refuses such a filter for that role, by this table and each field's `needs`.
FILTER_READS: Mapping[str, tuple[str, ...]] = Table(_reads)


def filters_set_in(stored: Mapping[str, Any]) -> dict[str, tuple[str, ...]]:
    """The filters a stored filter (a `FilterSpec`'s JSON object) sets, each with the fields it
    reads: what a role must see for it to apply. Unset filters are empty; the time window is
    left out (it reads start_time only)."""
    return {
        key: FILTER_READS[key]
        for key, value in stored.items()
        if key in FILTER_READS and key not in TIME_KEYS and value not in (None, "", [], ())
    }


def groupable() -> dict[str, Field]:
    """Group-by name -> field, in declaration order."""
    return derived("groupable", lambda: {f.group: f for f in FIELDS.values() if f.group})


def keyed_fields() -> dict[str, Field]:
    """Group-by prefix ("tag", "metadata") -> the JSON field whose keys it groups by."""
    return derived("keyed", lambda: {f.keyed: f for f in FIELDS.values() if f.keyed})


# A key a group-by may name: plain enough to be written into the SQL as a constant (bound,
# SELECT and GROUP BY would number it apart, see `fields._llm_call_text`) and into a column name.
KEY_PATTERN = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
KEY_HINT = "1 to 64 letters, digits, '_', '.' or '-'"


def keyed_problem(name: str) -> str | None:
    """Why `name` is not a keyed group-by ("tag:customer", "metadata:customer"), or None."""
    prefix, colon, key = name.partition(":")
    keyed = keyed_fields()
    if not colon or prefix not in keyed:
        choices = ", ".join(f"{p}:<key>" for p in keyed)
        return f"Cannot group by {name!r}; choose from {', '.join(DIMENSIONS)} or {choices}."
    if not KEY_PATTERN.match(key):
        return f"Cannot group by {name!r}: the key after {prefix}: must be {KEY_HINT}."
    return None


def keyed_field(name: str) -> Field:
    """The field a keyed group-by reads: one key of a JSON field, declared by the JSON
    field's `keyed` and `key_kind` (so a new keyed field needs no code elsewhere)."""
    problem = keyed_problem(name)
    if problem:
        raise KeyError(problem)
    prefix, _, key = name.partition(":")
    base = keyed_fields()[prefix]
    kind = base.key_kind

    def column(c: Any) -> Any:
        return KEY_SQL[kind](base.expression(c), key)

    return Field(
        name,
        f"{base.label}: {key}",
        "text",
        column=column,
        group=name,
        needs=base.needs,
        value=lambda row: key_value(kind, base.row_value(row), key),
    )


def field_named(name: str) -> Field:
    """A declared field, or one key of a keyed JSON field ("metadata:customer"): what a list
    or an export column may name."""
    found = FIELDS.get(name)
    return found if found is not None else keyed_field(name)


def is_dimension(name: str) -> bool:
    """A declared group-by, or one key of a keyed JSON field."""
    return name in groupable() or keyed_problem(name) is None


def dimension_problem(name: str) -> str | None:
    """What to send instead of `name`, or None when it is a group-by."""
    return None if name in groupable() else keyed_problem(name)


def by_group(name: str) -> Field:
    """The field a group-by name reads: declared (`group=`) or keyed ("tag:<key>")."""
    found = groupable().get(name)
    return found if found is not None else keyed_field(name)


def listed() -> tuple[str, ...]:
    return derived("listed", lambda: tuple(f.name for f in FIELDS.values() if f.listed))


def _needs() -> dict[str, Permission]:
    return derived(
        "needs", lambda: {f.name: f.needs for f in FIELDS.values() if f.needs is not None}
    )


# Span fields not every role may see, and the permission each needs (README "Users and
# roles"); fields without `needs` are visible to every role that can read spans or metrics.
FIELD_NEEDS: Mapping[str, Permission] = Table(_needs)
# Group-by names, the span field each groups by, and the ones rollup rows carry.
DIMENSIONS: Names = Names(lambda: tuple(g for g, f in groupable().items() if not f.slot))
DIMENSION_FIELDS: Mapping[str, str] = Table(lambda: {g: f.name for g, f in groupable().items()})
ROLLUP_GROUPS: Names = Names(lambda: tuple(g for g, f in groupable().items() if f.rollup))
# The filter keys a rollup row can answer, and the rollup column each reads.
ROLLUP_FILTER_COLUMNS: Mapping[str, str] = Table(
    lambda: {k: f.name for k, f in filter_keys().items() if f.rollup}
)
ROLLUP_FILTERS: Names = Names(lambda: tuple(ROLLUP_FILTER_COLUMNS))


def fields_hidden_from(role: Role) -> frozenset[str]:
    """The span fields `role` may not see."""
    have = ROLE_PERMISSIONS[role]
    return frozenset(f for f, needs in FIELD_NEEDS.items() if needs not in have)
