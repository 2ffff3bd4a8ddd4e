"""Every span field, declared once: what it is called, how to read it, how it may be filtered
and grouped, whether the rollups carry it, how the API and the sidebar offer it, and who may
see it. `FilterSpec`, the SQL compilation, the API's models, the sidebar, the group-by
choices, rollup eligibility, list and export columns and the tests' reference all read
`FIELDS` (docs/architecture.md, "Add a span field").

A field registered at run time (`FIELDS[name] = Field(...)`) is seen everywhere: the names
derived here are computed from `FIELDS` at each use, never copied at import.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import case, func, literal_column, null, true

from observatory_core.accounts.permissions import ROLE_PERMISSIONS, Permission, Role


class FilterKind(StrEnum):
    NONE = "none"
    IN_LIST = "in_list"  # key: one of these values
    RANGE = "range"  # min_<key>, max_<key>: inclusive bounds
    TAGS = "tags"  # <key>_any, <key>_all: a JSON array holding any / all of these
    METADATA = "metadata"  # key=value pairs of a JSON object, all must match
    SEARCH = "search"  # case-insensitive substring of the text fields it reads


class KeyKind(StrEnum):
    """How a JSON field holds values by key, for group-bys by any key (`keyed_field`)."""

    TAG = "tag"  # an array of strings: the text after "<key>:" in the first tag starting so
    OBJECT = "object"  # an object: the text of its top-level key


# How each kind reads one key in SQL, `(column, key) -> expression`: registered by
# `storage/dialect.py`, where the constructs (and each store's SQL for them) live.
KEY_SQL: dict[KeyKind, Callable[[Any, str], Any]] = {}


def key_value(kind: KeyKind, data: Any, key: str) -> str | None:
    """One key's value in a stored JSON value (a raw row's tags or metadata), as the SQL of
    `KEY_SQL` reads it: None when the span has no value for the key."""
    if kind is KeyKind.TAG:
        prefix = f"{key}:"
        return next((t[len(prefix) :] for t in data or () if str(t).startswith(prefix)), None)
    value = (data or {}).get(key)
    return None if value is None else str(value)


class Widget(StrEnum):
    """How the sidebar offers a field's filter."""

    NONE = "none"
    SEARCH = "search"  # a text box
    SEEN = "seen"  # a multiselect of the values stored in the caller's data
    CHOICES = "choices"  # a multiselect of the field's fixed choices
    STATUS = "status"  # the fixed choices, with ok standing for ok and unset
    PROJECT = "project"  # a multiselect of the caller's projects, by name
    TEXT_LIST = "text_list"  # comma-separated values
    METADATA = "metadata"  # comma-separated key=value pairs
    RANGE = "range"  # two number boxes, min and max


OPERATIONS = (
    "chat",
    "completion",
    "embeddings",
    "execute_tool",
    "retrieval",
    "invoke_agent",
    "other",
)
STATUSES = ("ok", "error", "unset")
# The operations that call a model: a span of one of these is an LLM call (a request).
LLM_OPERATIONS = ("chat", "completion", "embeddings")
# How the `llm_call` flag reads as a filter and a group (docs/metrics.md, "Subjects").
LLM_CALL_CHOICES = ("yes", "no")


# Issue 19: the slots an org's declared dimensions live in (one key each, up to this many;
# `storage.schema.org_dimensions`), columns of the spans and of every rollup table.
DIMENSION_SLOTS = tuple(f"dim_{n}" for n in range(1, 11))


SLOT_MARK = "="  # a slot holds "=" + the value ("=" alone: the empty value), '' for none
SLOT_CHARS = 199  # the value's characters a slot keeps (a String(200) with its mark)


def _slot_text(slot: str) -> Callable[[Any], Any]:
    """A slot's value: '' (a span without one) reads as no value, else the text after the
    mark. Constants are written into the SQL, so SELECT and GROUP BY match (`_llm_call_text`)."""
    return lambda c: case(
        (c[slot] == literal_column("''"), null()),
        else_=func.substr(c[slot], literal_column("2")),
    )


def _llm_call_text(c: Any) -> Any:
    """The stored flag as "yes"/"no", the same SQL over spans and rollup rows (constants
    written into the SQL: bound, SELECT and GROUP BY would number them apart)."""
    return case((c.llm_call == true(), literal_column("'yes'")), else_=literal_column("'no'"))


@dataclass(frozen=True)
class Field:
    name: str  # the span field (column name, or the name of an expression)
    label: str
    type: str  # text, int, float, bool, time, json
    # the SQL: a function of a column collection (`spans.c`, a rollup's `.c`), so this module
    # needs no table; None reads the column of the field's name
    column: Callable[[Any], Any] | None = None
    filter: FilterKind = FilterKind.NONE
    key: str | None = None  # the filter's key, or its stem (range: min_/max_; tags: _any/_all)
    choices: tuple[str, ...] | None = None  # the only values an in-list filter accepts
    pattern: str | None = None  # a regular expression each in-list value must match ...
    pattern_hint: str | None = None  # ... and what a person is told when one does not
    reads: tuple[str, ...] = ()  # the fields the filter reads; default: this one
    group: str | None = None  # its group-by name; None: not a group-by choice
    rollup: bool = False  # the rollup tables carry it (a rollup filter and group)
    description: str | None = None  # the API parameter's description
    widget: Widget = Widget.NONE
    widget_label: str | None = None  # the sidebar's label, when not `label`
    needs: Permission | None = None  # the permission needed to see it (None: every role)
    # its value in a raw span row (a dict as stored): the tests' independent reference
    value: Callable[[dict], Any] | None = None
    listed: bool = True  # can be a list or export column
    slot: bool = False  # a declared dimension's slot: a group-by the engine picks for a key
    # group by any key of this JSON field as "<keyed>:<key>" (`keyed_field`), read as `key_kind`
    keyed: str | None = None
    key_kind: KeyKind | None = None

    def expression(self, c: Any) -> Any:
        """The field's SQL over the column collection `c` (e.g. `spans.c`)."""
        return self.column(c) if self.column is not None else c[self.name]

    @property
    def plain(self) -> bool:
        """A stored column of its own name (not an expression)."""
        return self.column is None

    def row_value(self, row: dict) -> Any:
        return self.value(row) if self.value is not None else row[self.name]

    def filter_keys(self) -> tuple[str, ...]:
        """The filter's keys in `FilterSpec`, the URL and the API."""
        key = self.key or self.name
        match self.filter:
            case FilterKind.NONE:
                return ()
            case FilterKind.RANGE:
                return (f"min_{key}", f"max_{key}")
            case FilterKind.TAGS:
                return (f"{key}_any", f"{key}_all")
            case _:
                return (key,)

    def filter_reads(self) -> tuple[str, ...]:
        return self.reads or (self.name,)


_P = Permission
_HEX = r"[0-9a-f]{%d}"


def _f(*args: Any, **kwargs: Any) -> Field:
    return Field(*args, **kwargs)


# Declared in the order the sidebar, the filters and the group-by choices list them.
FIELDS: dict[str, Field] = {
    f.name: f
    for f in (
        _f(
            "provider",
            "Provider",
            "text",
            filter=FilterKind.IN_LIST,
            key="providers",
            group="provider",
            rollup=True,
            widget=Widget.SEEN,
        ),
        _f(
            "model",
            "Model",
            "text",
            filter=FilterKind.IN_LIST,
            key="models",
            group="model",
            rollup=True,
            widget=Widget.SEEN,
        ),
        _f(
            "environment",
            "Environment",
            "text",
            filter=FilterKind.IN_LIST,
            key="environments",
            group="environment",
            rollup=True,
            widget=Widget.SEEN,
        ),
        _f(
            "operation",
            "Operation",
            "text",
            filter=FilterKind.IN_LIST,
            key="operations",
            choices=OPERATIONS,
            group="operation",
            rollup=True,
            widget=Widget.CHOICES,
        ),
        _f(
            "status",
            "Status",
            "text",
            filter=FilterKind.IN_LIST,
            key="statuses",
            choices=STATUSES,
            group="status",
            rollup=True,
            widget=Widget.STATUS,
        ),
        _f(
            "llm_call",
            "LLM call",
            "text",
            column=_llm_call_text,
            filter=FilterKind.IN_LIST,
            key="llm_call",
            choices=LLM_CALL_CHOICES,
            group="llm_call",
            rollup=True,
            description='"yes": LLM calls only (requests); "no": every other span',
            widget=Widget.CHOICES,
            widget_label="LLM calls only",
            value=lambda row: "yes" if row["llm_call"] else "no",
        ),
        _f(
            "user_id",
            "User id",
            "text",
            filter=FilterKind.IN_LIST,
            key="user_ids",
            group="user_id",
            widget=Widget.TEXT_LIST,
            widget_label="User ids (comma-separated)",
        ),
        _f(
            "project_id",
            "Project",
            "int",
            filter=FilterKind.IN_LIST,
            key="project_ids",
            group="project",
            rollup=True,
            description="Project ids (whole numbers)",
            widget=Widget.PROJECT,
        ),
        _f(
            "session_id",
            "Session id",
            "text",
            filter=FilterKind.IN_LIST,
            key="session_ids",
            widget=Widget.TEXT_LIST,
            widget_label="Session ids",
        ),
        _f(
            "trace_id",
            "Trace id",
            "text",
            filter=FilterKind.IN_LIST,
            key="trace_ids",
            pattern=_HEX % 32,
            pattern_hint="32 lowercase hex digits",
            widget=Widget.TEXT_LIST,
            widget_label="Trace ids",
        ),
        _f(
            "span_id",
            "Span id",
            "text",
            filter=FilterKind.IN_LIST,
            key="span_ids",
            pattern=_HEX % 16,
            pattern_hint="16 lowercase hex digits",
        ),
        _f(
            "tags",
            "Tags",
            "json",
            filter=FilterKind.TAGS,
            widget=Widget.TEXT_LIST,
            keyed="tag",
            key_kind=KeyKind.TAG,
        ),
        _f(
            "metadata",
            "Metadata",
            "json",
            filter=FilterKind.METADATA,
            description='key=value pairs as JSON lists, e.g. ["region","eu"]',
            widget=Widget.METADATA,
            widget_label="Metadata key=value",
            keyed="metadata",
            key_kind=KeyKind.OBJECT,
        ),
        _f(
            "duration_ms",
            "Duration (ms)",
            "float",
            filter=FilterKind.RANGE,
            widget=Widget.RANGE,
            widget_label="Duration ms",
        ),
        _f(
            "total_cost_usd",
            "Cost (USD)",
            "float",
            filter=FilterKind.RANGE,
            key="cost_usd",
            widget=Widget.RANGE,
            widget_label="Cost USD",
            needs=_P.COSTS_READ,
        ),
        _f(
            "total_tokens",
            "Total tokens",
            "int",
            filter=FilterKind.RANGE,
            widget=Widget.RANGE,
            widget_label="Total tokens",
        ),
        _f(
            "input_text",
            "Prompt",
            "text",
            filter=FilterKind.SEARCH,
            key="search",
            reads=("input_text", "output_text"),
            description="Full-text search of prompts and answers (3+ characters)",
            widget=Widget.SEARCH,
            widget_label="Search prompts and answers",
            needs=_P.TRACES_READ,
        ),
        _f("output_text", "Answer", "text", needs=_P.TRACES_READ),
        _f("text_truncated", "Text truncated", "bool", needs=_P.TRACES_READ),
        _f("input_cost_usd", "Input cost (USD)", "float", needs=_P.COSTS_READ),
        _f("output_cost_usd", "Output cost (USD)", "float", needs=_P.COSTS_READ),
        _f("cost_source", "Cost source", "text", needs=_P.COSTS_READ),
        _f("id", "Id", "int"),
        _f("parent_span_id", "Parent span id", "text"),
        _f("start_time", "Start", "time"),
        _f("end_time", "End", "time"),
        _f("ttft_ms", "Time to first token (ms)", "float"),
        _f("name", "Name", "text", group="name"),
        _f("service_name", "Service", "text"),
        _f("error_type", "Error type", "text"),
        _f("error_message", "Error message", "text"),
        _f("finish_reason", "Finish reason", "text"),
        _f("input_tokens", "Input tokens", "int"),
        _f("output_tokens", "Output tokens", "int"),
        _f("attributes", "Attributes", "json"),
        _f("quality_score", "Quality score", "float"),
        _f("scope_name", "Instrumentation scope", "text"),
        # set on a span set aside as the twin of another (docs/ingestion.md)
        _f("duplicate_of", "Duplicate of", "text"),
        _f("duplicate_trace_id", "Duplicate of (trace)", "text"),
        # the declared dimensions' slots: the engine groups by one in place of the key an org
        # declared (`rollups/dimensions.py`); never offered to a person
        *(
            _f(
                slot,
                f"Dimension slot {slot}",
                "text",
                column=_slot_text(slot),
                group=slot,
                rollup=True,
                listed=False,
                slot=True,
                value=lambda row, slot=slot: (row.get(slot) or None) and row[slot][1:],
            )
            for slot in DIMENSION_SLOTS
        ),
    )
}


# ---- derived, at each use ---------------------------------------------------------------
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
# SELECT and GROUP BY would number it apart, see `_llm_call_text`) and into a column name.
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
