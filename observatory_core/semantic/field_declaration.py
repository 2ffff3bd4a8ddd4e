"""What a span field's declaration says (`Field`) and the kinds it names: how it is filtered
(`FilterKind`), how a JSON field holds values by key (`KeyKind`, read in SQL by `KEY_SQL`) and
how the sidebar offers it (`Widget`). The fields themselves are declared in `fields.py`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from observatory_core.accounts.permissions import Permission


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
