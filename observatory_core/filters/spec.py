"""`FilterSpec`: an immutable, validated description of which spans.

It round-trips losslessly to URL query parameters (shareable links) and to JSON (stored with
exports and alert rules). Every bad value is refused with a message naming the field and the fix.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from observatory_core.base.errors import UserError
from observatory_core.storage.schema import OPERATIONS, STATUSES

_RELATIVE = re.compile(r"^(\d+)(m|h|d)$")
_UNIT = {"m": timedelta(minutes=1), "h": timedelta(hours=1), "d": timedelta(days=1)}
MIN_RELATIVE, MAX_RELATIVE = timedelta(minutes=15), timedelta(days=365)
MAX_LIST = 200  # values per in-list
MAX_TEXT = 500  # characters per value
MAX_NUMBER = 1e15
MIN_SEARCH = 3  # both full-text indexes work on trigrams
MAX_URL = 8_000  # characters of filter parameters in one link
_HEX = {"trace_ids": 32, "span_ids": 16}

LIST_FIELDS = (
    "trace_ids",
    "span_ids",
    "session_ids",
    "user_ids",
    "providers",
    "models",
    "operations",
    "environments",
    "statuses",
    "project_ids",
    "tags_any",
    "tags_all",
)
RANGE_FIELDS = (
    "min_duration_ms",
    "max_duration_ms",
    "min_cost_usd",
    "max_cost_usd",
    "min_total_tokens",
    "max_total_tokens",
)

# The span field(s) each filter reads. A filter on a field a role may not see would let it
# bisect the hidden values (min_cost_usd=0.05 then 0.025 ...), so `observatory_core.accounts.visibility`
# refuses such a filter for that role, by this table and `permissions.FIELD_NEEDS`.
FILTER_READS: dict[str, tuple[str, ...]] = {
    "relative": ("start_time",),
    "start": ("start_time",),
    "end": ("start_time",),
    "trace_ids": ("trace_id",),
    "span_ids": ("span_id",),
    "session_ids": ("session_id",),
    "user_ids": ("user_id",),
    "providers": ("provider",),
    "models": ("model",),
    "operations": ("operation",),
    "environments": ("environment",),
    "statuses": ("status",),
    "project_ids": ("project_id",),
    "min_duration_ms": ("duration_ms",),
    "max_duration_ms": ("duration_ms",),
    "min_cost_usd": ("total_cost_usd",),
    "max_cost_usd": ("total_cost_usd",),
    "min_total_tokens": ("total_tokens",),
    "max_total_tokens": ("total_tokens",),
    "tags_any": ("tags",),
    "tags_all": ("tags",),
    "metadata": ("metadata",),
    "search": ("input_text", "output_text"),
}


class FilterError(UserError):
    """A filter value is wrong; the message names the field."""


def _fail(name: str, problem: str) -> FilterError:
    return FilterError(f"Filter '{name}': {problem}")


@dataclass(frozen=True)
class FilterSpec:
    # time: a relative window ("24h"), or absolute bounds, or neither (all time)
    relative: str | None = "24h"
    start: datetime | None = None
    end: datetime | None = None
    trace_ids: tuple[str, ...] = ()
    span_ids: tuple[str, ...] = ()
    session_ids: tuple[str, ...] = ()
    user_ids: tuple[str, ...] = ()
    providers: tuple[str, ...] = ()
    models: tuple[str, ...] = ()
    operations: tuple[str, ...] = ()
    environments: tuple[str, ...] = ()
    statuses: tuple[str, ...] = ()
    project_ids: tuple[int, ...] = ()
    min_duration_ms: float | None = None
    max_duration_ms: float | None = None
    min_cost_usd: float | None = None
    max_cost_usd: float | None = None
    min_total_tokens: float | None = None
    max_total_tokens: float | None = None
    tags_any: tuple[str, ...] = ()
    tags_all: tuple[str, ...] = ()
    metadata: tuple[tuple[str, str], ...] = field(default=())
    search: str | None = None

    def __post_init__(self) -> None:
        self._validate()

    # ---- validation -----------------------------------------------------------------
    def _validate(self) -> None:
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
        for name in LIST_FIELDS:
            values = getattr(self, name)
            if len(values) > MAX_LIST:
                raise _fail(name, f"at most {MAX_LIST} values, got {len(values)}")
            for v in values:
                if name == "project_ids":
                    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                        raise _fail(name, f"{v!r} is not a project id (a whole number)")
                    continue
                if not isinstance(v, str) or not v or len(v) > MAX_TEXT:
                    raise _fail(
                        name, f"values must be non-empty text of at most {MAX_TEXT} characters"
                    )
                if "\x00" in v:
                    raise _fail(name, "values cannot contain NUL characters")
                if name in _HEX and not re.fullmatch(f"[0-9a-f]{{{_HEX[name]}}}", v):
                    raise _fail(name, f"{v!r} is not {_HEX[name]} lowercase hex digits")
        for name, allowed in (("operations", OPERATIONS), ("statuses", STATUSES)):
            bad = [v for v in getattr(self, name) if v not in allowed]
            if bad:
                raise _fail(name, f"unknown {bad[0]!r}; choose from {', '.join(allowed)}")
        for name in RANGE_FIELDS:
            value = getattr(self, name)
            if value is None:
                continue
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
            ):
                raise _fail(name, f"{value!r} is not a number")
            if value < 0 or value > MAX_NUMBER:
                raise _fail(name, f"must lie between 0 and {MAX_NUMBER:.0e}")
        for low, high in (
            ("min_duration_ms", "max_duration_ms"),
            ("min_cost_usd", "max_cost_usd"),
            ("min_total_tokens", "max_total_tokens"),
        ):
            a, b = getattr(self, low), getattr(self, high)
            if a is not None and b is not None and a > b:
                raise _fail(low, f"{a} is above {high} {b}; swap them")
        for pair in self.metadata:
            if len(pair) != 2 or not all(isinstance(x, str) for x in pair) or not pair[0]:
                raise _fail("metadata", "use key=value pairs with a non-empty key")
            if any(len(x) > MAX_TEXT for x in pair):
                raise _fail("metadata", f"keys and values have at most {MAX_TEXT} characters")
            if any("\x00" in x for x in pair):
                raise _fail("metadata", "keys and values cannot contain NUL characters")
        if self.search is not None:
            if not isinstance(self.search, str) or len(self.search.strip()) < MIN_SEARCH:
                raise _fail("search", f"search for at least {MIN_SEARCH} characters")
            if len(self.search) > MAX_TEXT:
                raise _fail("search", f"search text has at most {MAX_TEXT} characters")
            if "\x00" in self.search:
                raise _fail("search", "search text cannot contain NUL characters")

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
        return replace(self, relative=None, start=start, end=end)

    def only_uses(self, allowed: frozenset[str] | set[str]) -> bool:
        """True when, besides the time window, only the `allowed` fields are set: whether a
        precomputed table (rollups, trace totals) holding just those columns can answer it."""
        return all(
            getattr(self, f.name) == f.default
            for f in fields(self)
            if f.name not in ("relative", "start", "end") and f.name not in allowed
        )

    def fields_read(self) -> dict[str, tuple[str, ...]]:
        """The filters that are set (differ from "everything"), each with the span fields it
        reads: what a role must be allowed to see for this filter to be applied for it."""
        return {
            f.name: FILTER_READS[f.name]
            for f in fields(self)
            if f.name not in ("relative", "start", "end") and getattr(self, f.name) != f.default
        }

    # ---- URL query parameters ----------------------------------------------------------
    def to_query_params(self) -> dict[str, list[str]]:
        """Only what differs from the default, so links stay short."""
        out: dict[str, list[str]] = {}
        default = FilterSpec()
        if self.relative != default.relative:
            out["relative"] = [self.relative or "all"]
        for name in ("start", "end"):
            if getattr(self, name):
                out[name] = [getattr(self, name).isoformat()]
        for name in LIST_FIELDS:
            if getattr(self, name):
                out[name] = [str(v) for v in getattr(self, name)]
        for name in RANGE_FIELDS:
            if getattr(self, name) is not None:
                out[name] = [repr(float(getattr(self, name)))]
        if self.metadata:
            out["metadata"] = [json.dumps(list(p)) for p in self.metadata]
        if self.search is not None:
            out["search"] = [self.search]
        return out

    @classmethod
    def from_query_params(
        cls, params: dict[str, list[str] | str], ignore: frozenset[str] = frozenset()
    ) -> FilterSpec:
        """Parse a link's parameters; `ignore` names the page's own (sort, cursor ...)."""
        known = {f.name for f in fields(cls)}
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
            if key not in known:
                raise _fail(key, f"unknown field; known fields: {', '.join(sorted(known))}")
            if key == "relative":
                values[key] = None if items[-1] == "all" else items[-1]
            elif key in ("start", "end"):
                values[key] = _parse_time(key, items[-1])
            elif key == "project_ids":
                values[key] = tuple(_parse_int(key, v) for v in items)
            elif key in LIST_FIELDS:
                values[key] = tuple(items)
            elif key in RANGE_FIELDS:
                values[key] = _parse_number(key, items[-1])
            elif key == "metadata":
                values[key] = tuple(_parse_pair(v) for v in items)
            elif key == "search":
                values[key] = items[-1]
        if ("start" in values or "end" in values) and "relative" not in values:
            values["relative"] = None
        return cls(**values)

    # ---- JSON -------------------------------------------------------------------------
    def to_json(self) -> str:
        data = asdict(self)
        for name in ("start", "end"):
            if data[name] is not None:
                data[name] = data[name].isoformat()
        data["metadata"] = [list(p) for p in self.metadata]
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | dict) -> FilterSpec:
        try:
            data = json.loads(text) if isinstance(text, str) else dict(text)
        except json.JSONDecodeError as exc:
            raise _fail("json", f"not valid JSON ({exc.msg})") from None
        if not isinstance(data, dict):
            raise _fail("json", "expected an object of filter fields")
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise _fail(unknown[0], f"unknown field; known fields: {', '.join(known)}")
        values: dict[str, Any] = {}
        for key, value in data.items():
            if key in ("start", "end") and value is not None:
                values[key] = _parse_time(key, value)
            elif key in LIST_FIELDS:
                if not isinstance(value, list):
                    raise _fail(key, "expected a list")
                values[key] = tuple(value)
            elif key == "metadata":
                if not isinstance(value, list):
                    raise _fail(key, "expected a list of [key, value] pairs")
                values[key] = tuple(tuple(p) if isinstance(p, list) else p for p in value)
            else:
                values[key] = value
        return cls(**values)


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


def _parse_pair(raw: str) -> tuple[str, str]:
    try:
        pair = json.loads(raw)
    except json.JSONDecodeError:
        pair = raw.split("=", 1) if "=" in raw else None
    if not isinstance(pair, list) or len(pair) != 2:
        raise _fail("metadata", f"{raw!r} is not key=value")
    return str(pair[0]), str(pair[1])
