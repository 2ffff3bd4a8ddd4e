"""The canonical span row every writer (demo, import, OTLP) hands to storage.

Derived fields are filled in one place so that totals and text cuts mean the same whatever
the source.
"""

from __future__ import annotations

from typing import Any

from observatory_core.ingest.llm_calls import row_rule
from observatory_core.storage.bulk import SPAN_COLUMNS as SPAN_COLUMNS  # the columns it fills
from observatory_core.storage.schema import spans

_DEFAULTS: dict[str, Any] = {
    "parent_span_id": None,
    "ttft_ms": None,
    "provider": None,
    "model": None,
    "environment": "default",
    "service_name": None,
    "user_id": None,
    "session_id": None,
    "status": "unset",
    "error_type": None,
    "error_message": None,
    "finish_reason": None,
    "input_tokens": 0,
    "output_tokens": 0,
    "input_cost_usd": 0.0,
    "output_cost_usd": 0.0,
    "cost_source": "computed",
    "input_text": None,
    "output_text": None,
    "quality_score": None,
    "duplicate_of": None,
    "duplicate_trace_id": None,
}


# Bounded text columns: a longer value is cut rather than failing the whole batch.
_LENGTHS = {c.name: c.type.length for c in spans.columns if getattr(c.type, "length", None)}
_JSON_COLUMNS = ("tags", "metadata", "attributes")
_TEXT_COLUMNS = tuple(c.name for c in spans.columns if c.type.python_type is str)
# PostgreSQL cannot hold U+0000 in text or jsonb, and tool output often carries it; every store
# gets U+FFFD in its place so a span reads the same wherever it is kept (docs/ingestion.md).
NUL, REPLACEMENT = "\x00", "\ufffd"
# text column -> its length (0: unbounded), looked up for a row's own keys only: the defaults
# fit their columns and hold no NUL (tests/ingest/test_mapping_snapshot.py)
_TEXT_LIMITS = {name: _LENGTHS.get(name, 0) for name in _TEXT_COLUMNS}
_CONTAINERS = (dict, list, tuple)


def _has_nul(value: Any) -> bool:
    """Plain loops on exact types: this runs for every stored span, and nearly always finds
    nothing."""
    kind = type(value)
    if kind is str:
        return NUL in value
    if kind is dict:
        for key, item in value.items():
            if type(key) is str and NUL in key:
                return True
            item_kind = type(item)
            if item_kind is str:
                if NUL in item:
                    return True
            elif item_kind in _CONTAINERS and _has_nul(item):
                return True
        return False
    if kind in _CONTAINERS:
        for item in value:
            item_kind = type(item)
            if item_kind is str:
                if NUL in item:
                    return True
            elif item_kind in _CONTAINERS and _has_nul(item):
                return True
    return False


def _replace_nul(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace(NUL, REPLACEMENT)
    if isinstance(value, dict):
        return {_replace_nul(k): _replace_nul(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_replace_nul(v) for v in value]
    return value


def without_nul(value: Any) -> Any:
    """`value` (a string, or JSON made of dicts and lists) with every NUL made U+FFFD; the
    value itself when it has none (the common case, checked without copying)."""
    return _replace_nul(value) if _has_nul(value) else value


# free-text columns given by name (the mapping's `FREE_TEXT`) -> (column, length) of the ones
# with a text column: made once, not looked up name by name for every span
_FREE_LIMITS: dict[tuple[str, ...], tuple[tuple[str, int], ...]] = {}


def _limits(names, fixed: bool) -> tuple[tuple[str, int], ...]:
    """(column, length) for each of `names` that is a text column; `fixed`: `names` is a
    tuple given again for every row, remembered."""
    found = _FREE_LIMITS.get(names) if fixed else None
    if found is None:
        found = tuple((name, _TEXT_LIMITS[name]) for name in names if name in _TEXT_LIMITS)
        if fixed and len(_FREE_LIMITS) < 16:
            _FREE_LIMITS[names] = found
    return found


def cut_text(value: str | None, max_chars: int) -> tuple[str | None, bool]:
    if value is None or len(value) <= max_chars:
        return value, False
    return value[:max_chars], True


def complete_row(
    row: dict[str, Any], max_chars: int, free_text: tuple[str, ...] | None = None
) -> dict[str, Any]:
    """A full row: defaults, totals, duration, the text cut at `max_chars`, no NUL anywhere.
    `free_text`: the only text columns of `row` that may be too long or hold NUL (the OTLP
    mapping's `FREE_TEXT`: it makes the others itself), checked instead of all of the row's."""
    out = {**_DEFAULTS, **row}
    out["total_tokens"] = int(out["input_tokens"] or 0) + int(out["output_tokens"] or 0)
    out["total_cost_usd"] = float(out["input_cost_usd"] or 0) + float(out["output_cost_usd"] or 0)
    # by its own fields; the write path clears an `other` span with an LLM call below it
    out["llm_call"] = row_rule(out)
    if "duration_ms" not in row:
        out["duration_ms"] = (out["end_time"] - out["start_time"]).total_seconds() * 1000.0
    out["input_text"], cut_in = cut_text(out["input_text"], max_chars)
    out["output_text"], cut_out = cut_text(out["output_text"], max_chars)
    out["text_truncated"] = bool(row.get("text_truncated")) or cut_in or cut_out
    for name, length in _limits(row if free_text is None else free_text, free_text is not None):
        value = out[name]  # cut to the column, then no NUL
        if isinstance(value, str):
            if length and len(value) > length:
                value = out[name] = value[:length]
            if NUL in value:
                out[name] = value.replace(NUL, REPLACEMENT)
    out.setdefault("tags", [])
    out.setdefault("metadata", {})
    out.setdefault("attributes", {})
    if out.get("scope_name") is None:  # who sent it, kept as an attribute by the mapping
        scope_name = out["attributes"].get("otel.scope.name")
        if isinstance(scope_name, str) and scope_name:  # not cut, as before
            out["scope_name"] = scope_name.replace(NUL, REPLACEMENT)
        else:
            out["scope_name"] = None
    for name in _JSON_COLUMNS:
        if out[name]:  # an empty one holds no NUL
            out[name] = without_nul(out[name])
    return out
