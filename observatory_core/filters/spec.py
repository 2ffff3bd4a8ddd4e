"""`FilterSpec`: an immutable, validated description of which spans.

It round-trips losslessly to URL query parameters (shareable links) and to JSON (stored with
exports and alert rules). Every bad value is refused with a message naming the field and the fix.
"""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from observatory_core.base.errors import UserError
from observatory_core.semantic.field_declaration import Field, FilterKind
from observatory_core.semantic.field_lookups import TIME_KEYS, derived, filter_keys

_RELATIVE = re.compile(r"^(\d+)(m|h|d)$")
_UNIT = {"m": timedelta(minutes=1), "h": timedelta(hours=1), "d": timedelta(days=1)}
MIN_RELATIVE, MAX_RELATIVE = timedelta(minutes=15), timedelta(days=365)
MAX_LIST = 200  # values per in-list
MAX_TEXT = 500  # characters per value
MAX_NUMBER = 1e15
MIN_SEARCH = 3  # both full-text indexes work on trigrams
MAX_URL = 8_000  # characters of filter parameters in one link
_LISTS = (FilterKind.IN_LIST, FilterKind.TAGS)
_SCALARS = (FilterKind.RANGE, FilterKind.SEARCH)


def filter_names() -> tuple[str, ...]:
    """Every key a `FilterSpec` (a link, the API, a stored JSON) may hold, from the fields."""
    return derived("filter_names", lambda: (*TIME_KEYS, *filter_keys()))


class FilterError(UserError):
    """A filter value is wrong; the message names the field."""


def _fail(name: str, problem: str) -> FilterError:
    return FilterError(f"Filter '{name}': {problem}")


def _default(field: Field) -> Any:
    return None if field.filter in _SCALARS else ()


class FilterSpec:
    """Which spans: a time window plus any declared filter (`semantic.fields`), each read as
    an attribute (`spec.models`, `spec.min_cost_usd`). Immutable and hashable; values equal
    to "everything" are not kept, so two specs asking the same are equal."""

    __slots__ = ("relative", "start", "end", "_values")

    def __init__(
        self,
        relative: str | None = "24h",
        start: datetime | None = None,
        end: datetime | None = None,
        **filters: Any,
    ) -> None:
        keys = filter_keys()
        values: dict[str, Any] = {}
        for key, value in filters.items():
            field = keys.get(key)
            if field is None:
                known = ", ".join(filter_names())
                raise _fail(key, f"unknown field; known fields: {known}")
            value = _normal(key, field, value)
            if value != _default(field):
                values[key] = value
        ordered = {k: values[k] for k in keys if k in values}
        for name, value in (("relative", relative), ("start", start), ("end", end)):
            object.__setattr__(self, name, value)
        object.__setattr__(self, "_values", ordered)
        self._validate(keys)

    def __getattr__(self, name: str) -> Any:
        field = filter_keys().get(name) if not name.startswith("__") else None
        if field is None:
            raise AttributeError(f"FilterSpec has no filter {name!r}")
        return self._values.get(name, _default(field))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("FilterSpec is immutable; use spec.replace(...)")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("FilterSpec is immutable")

    def _key(self) -> tuple:
        return (self.relative, self.start, self.end, tuple(self._values.items()))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FilterSpec) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        parts = [f"relative={self.relative!r}"]
        parts += [f"{n}={getattr(self, n)!r}" for n in ("start", "end") if getattr(self, n)]
        parts += [f"{k}={v!r}" for k, v in self._values.items()]
        return f"FilterSpec({', '.join(parts)})"

    def __reduce__(self):
        # the class, plain arguments and a dict: what pickle, copy and Streamlit's cache
        # hashing (which hashes this tuple, classes by name) all take
        return (FilterSpec, (self.relative, self.start, self.end), dict(self._values))

    def __setstate__(self, values: dict[str, Any]) -> None:
        object.__setattr__(self, "_values", dict(values))

    def filters(self) -> dict[str, Any]:
        """The filters that are set (besides the time window), by key."""
        return dict(self._values)

    def replace(self, **changes: Any) -> FilterSpec:
        """The same spec with `changes` (a time bound, a filter's values) applied."""
        now = {"relative": self.relative, "start": self.start, "end": self.end, **self._values}
        return FilterSpec(**{**now, **changes})

    # ---- validation -----------------------------------------------------------------
    def _validate(self, keys: dict[str, Field]) -> None:
        if self.relative is not None and (self.start or self.end):
            raise _fail("time", "give either a relative window or start/end, not both")
        if self.relative is not None:
            relative_delta(self.relative)
        for name in ("start", "end"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, datetime) or value.tzinfo is None):
                raise _fail(name, "must be a date-time with a time zone, e.g. 2026-11-01T00:00:00Z")
        if self.start and self.end and self.start >= self.end:
            raise _fail(
                "time",
                f"start {self.start.isoformat()} is not before end {self.end.isoformat()}; swap them",
            )
        for key, value in self._values.items():
            field = keys[key]
            match field.filter:
                case FilterKind.IN_LIST | FilterKind.TAGS:
                    _check_list(key, field, value)
                case FilterKind.RANGE:
                    _check_number(key, value)
                case FilterKind.METADATA:
                    _check_pairs(key, value)
                case FilterKind.SEARCH:
                    _check_search(key, value)
        for field in {id(f): f for f in keys.values()}.values():
            if field.filter is FilterKind.RANGE:
                low, high = field.filter_keys()
                a, b = self._values.get(low), self._values.get(high)
                if a is not None and b is not None and a > b:
                    raise _fail(low, f"{a} is above {high} {b}; swap them")

    # ---- time -------------------------------------------------------------------------
    def window(self, now: datetime) -> tuple[datetime | None, datetime | None]:
        """Absolute bounds [start, end) at `now`; None for an open side."""
        if self.relative is not None:
            return now - relative_delta(self.relative), now
        return self.start, self.end

    def pinned(self, now: datetime) -> FilterSpec:
        """The same filter with a relative window fixed to absolute times (for cursors and jobs)."""
        if self.relative is None:
            return self
        start, end = self.window(now)
        return self.replace(relative=None, start=start, end=end)

    def only_uses(self, allowed) -> bool:
        """True when, besides the time window, only the `allowed` filters are set: whether a
        precomputed table (rollups, trace totals) holding just those columns can answer it."""
        return all(key in allowed for key in self._values)

    def fields_read(self) -> dict[str, tuple[str, ...]]:
        """The filters that are set (differ from "everything"), each with the span fields it
        reads: what a role must be allowed to see for this filter to be applied for it."""
        keys = filter_keys()
        return {key: keys[key].filter_reads() for key in self._values}

    # ---- URL query parameters ----------------------------------------------------------
    def to_query_params(self) -> dict[str, list[str]]:
        """Only what differs from the default, so links stay short."""
        out: dict[str, list[str]] = {}
        if self.relative != "24h":
            out["relative"] = [self.relative or "all"]
        for name in ("start", "end"):
            if getattr(self, name):
                out[name] = [getattr(self, name).isoformat()]
        keys = filter_keys()
        for key, value in self._values.items():
            match keys[key].filter:
                case FilterKind.IN_LIST | FilterKind.TAGS:
                    out[key] = [str(v) for v in value]
                case FilterKind.RANGE:
                    out[key] = [repr(float(value))]
                case FilterKind.METADATA:
                    out[key] = [json.dumps(list(p)) for p in value]
                case FilterKind.SEARCH:
                    out[key] = [value]
        return out

    @classmethod
    def from_query_params(
        cls, params: dict[str, list[str] | str], ignore: frozenset[str] = frozenset()
    ) -> FilterSpec:
        """Parse a link's parameters; `ignore` names the page's own (sort, cursor ...)."""
        keys = filter_keys()
        size = sum(
            len(k) + sum(len(v) for v in ([r] if isinstance(r, str) else r))
            for k, r in params.items()
        )
        if size > MAX_URL:
            raise _fail(
                "url", f"the link holds {size:,} characters of filters; the limit is {MAX_URL:,}"
            )
        values: dict[str, Any] = {}
        for key, raw in params.items():
            items = [raw] if isinstance(raw, str) else list(raw)
            if key in ignore:
                continue
            if key == "relative":
                values[key] = None if items[-1] == "all" else items[-1]
                continue
            if key in ("start", "end"):
                values[key] = _parse_time(key, items[-1])
                continue
            field = keys.get(key)
            if field is None:
                known = ", ".join(sorted(filter_names()))
                raise _fail(key, f"unknown field; known fields: {known}")
            match field.filter:
                case FilterKind.IN_LIST if field.type == "int":
                    values[key] = tuple(_parse_int(key, v) for v in items)
                case FilterKind.IN_LIST | FilterKind.TAGS:
                    values[key] = tuple(items)
                case FilterKind.RANGE:
                    values[key] = _parse_number(key, items[-1])
                case FilterKind.METADATA:
                    values[key] = tuple(_parse_pair(key, v) for v in items)
                case FilterKind.SEARCH:
                    values[key] = items[-1]
        if ("start" in values or "end" in values) and "relative" not in values:
            values["relative"] = None
        return cls(**values)

    # ---- JSON -------------------------------------------------------------------------
    def to_json(self) -> str:
        """Every key, set or not (the stored form of exports and alert rules)."""
        data: dict[str, Any] = {
            "relative": self.relative,
            "start": self.start.isoformat() if self.start else None,
            "end": self.end.isoformat() if self.end else None,
        }
        for key, field in filter_keys().items():
            value = getattr(self, key)
            if field.filter is FilterKind.METADATA:
                value = [list(p) for p in value]
            elif isinstance(value, tuple):
                value = list(value)
            data[key] = value
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | dict) -> FilterSpec:
        try:
            data = json.loads(text) if isinstance(text, str) else dict(text)
        except json.JSONDecodeError as exc:
            raise _fail("json", f"not valid JSON ({exc.msg})") from None
        if not isinstance(data, dict):
            raise _fail("json", "expected an object of filter fields")
        keys = filter_keys()
        known = filter_names()
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise _fail(unknown[0], f"unknown field; known fields: {', '.join(known)}")
        values: dict[str, Any] = {}
        for key, value in data.items():
            if key in ("start", "end") and value is not None:
                values[key] = _parse_time(key, value)
            elif key in keys and keys[key].filter in _LISTS:
                if not isinstance(value, list):
                    raise _fail(key, "expected a list")
                values[key] = tuple(value)
            elif key in keys and keys[key].filter is FilterKind.METADATA:
                if not isinstance(value, list):
                    raise _fail(key, "expected a list of [key, value] pairs")
                values[key] = tuple(tuple(p) if isinstance(p, list) else p for p in value)
            else:
                values[key] = value
        return cls(**values)


def _normal(key: str, field: Field, value: Any) -> Any:
    """Lists as tuples (hashable), so equal filters compare and hash equal."""
    if field.filter in _LISTS or field.filter is FilterKind.METADATA:
        if value is None:
            return ()
        if isinstance(value, str | bytes) or not hasattr(value, "__iter__"):
            raise _fail(key, "expected a list of values")
        if field.filter is FilterKind.METADATA:
            return tuple(tuple(p) if isinstance(p, list) else p for p in value)
        return tuple(value)
    return value


def _check_list(key: str, field: Field, values: tuple) -> None:
    if len(values) > MAX_LIST:
        raise _fail(key, f"at most {MAX_LIST} values, got {len(values)}")
    for v in values:
        if field.type == "int":
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise _fail(key, f"{v!r} is not a {field.label.lower()} id (a whole number)")
            continue
        if not isinstance(v, str) or not v or len(v) > MAX_TEXT:
            raise _fail(key, f"values must be non-empty text of at most {MAX_TEXT} characters")
        if "\x00" in v:
            raise _fail(key, "values cannot contain NUL characters")
        if field.pattern and not re.fullmatch(field.pattern, v):
            raise _fail(key, f"{v!r} is not {field.pattern_hint or field.pattern}")
    if field.choices is not None:
        bad = [v for v in values if v not in field.choices]
        if bad:
            raise _fail(key, f"unknown {bad[0]!r}; choose from {', '.join(field.choices)}")


def _check_number(key: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _fail(key, f"{value!r} is not a number")
    if value < 0 or value > MAX_NUMBER:
        raise _fail(key, f"must lie between 0 and {MAX_NUMBER:.0e}")


def _check_pairs(key: str, pairs: tuple) -> None:
    for pair in pairs:
        if (
            not isinstance(pair, tuple | list)
            or len(pair) != 2
            or not all(isinstance(x, str) for x in pair)
            or not pair[0]
        ):
            raise _fail(key, "use key=value pairs with a non-empty key")
        if any(len(x) > MAX_TEXT for x in pair):
            raise _fail(key, f"keys and values have at most {MAX_TEXT} characters")
        if any("\x00" in x for x in pair):
            raise _fail(key, "keys and values cannot contain NUL characters")


def _check_search(key: str, text: Any) -> None:
    if not isinstance(text, str) or len(text.strip()) < MIN_SEARCH:
        raise _fail(key, f"search for at least {MIN_SEARCH} characters")
    if len(text) > MAX_TEXT:
        raise _fail(key, f"search text has at most {MAX_TEXT} characters")
    if "\x00" in text:
        raise _fail(key, "search text cannot contain NUL characters")


def relative_delta(text: str) -> timedelta:
    match = _RELATIVE.match(text) if isinstance(text, str) else None
    if not match:
        raise _fail("relative", f"{text!r} is not a window like 15m, 24h or 30d")
    delta = int(match.group(1)) * _UNIT[match.group(2)]
    if not MIN_RELATIVE <= delta <= MAX_RELATIVE:
        raise _fail("relative", "choose a window from 15m to 365d")
    return delta


def _parse_time(name: str, raw: str) -> datetime:
    try:
        value = datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
    except ValueError:
        raise _fail(name, f"{raw!r} is not an ISO date-time such as 2026-11-01T00:00:00Z") from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# The same reading for a page's or a route's own times (What changed's baseline period).
parse_time = _parse_time


def _parse_number(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise _fail(name, f"{raw!r} is not a number") from None
    return value


def _parse_int(name: str, raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise _fail(name, f"{raw!r} is not a whole number") from None


def _parse_pair(name: str, raw: str) -> tuple[str, str]:
    try:
        pair = json.loads(raw)
    except json.JSONDecodeError:
        pair = raw.split("=", 1) if "=" in raw else None
    if not isinstance(pair, list) or len(pair) != 2:
        raise _fail(name, f"{raw!r} is not key=value")
    return str(pair[0]), str(pair[1])
