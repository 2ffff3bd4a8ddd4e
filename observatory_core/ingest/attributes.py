"""OTLP attribute values as plain Python, and the bounds that keep one span from being huge."""

from __future__ import annotations

import json
import math
from typing import Any

# A kept (unmapped) attribute string is cut here; the mapped text fields have their own limit.
ATTRIBUTE_MAX_CHARS = 4096
ATTRIBUTES_MAX_KEYS = 128
LIST_MAX_ITEMS = 128
# Lists and maps nested deeper than this are kept as a marker: nothing reads them, and the
# stores (and every reader of the JSON) stay far from their recursion limits.
MAX_DEPTH = 16
TOO_DEEP = "(nested too deeply)"


def any_value(value) -> Any:
    """An `AnyValue` message as str/bool/int/float/list/dict/None (bytes as hex)."""
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind == "int_value":
        return value.int_value
    if kind == "double_value":
        return value.double_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in value.kvlist_value.values}
    if kind == "bytes_value":
        return value.bytes_value.hex()
    return None


def as_dict(key_values) -> dict[str, Any]:
    """`any_value` of each value by its key (a later key of the same name wins); strings and
    integers, most attributes, read here without the call."""
    out: dict[str, Any] = {}
    for kv in key_values:
        value = kv.value
        kind = value.WhichOneof("value")
        if kind == "string_value":
            out[kv.key] = value.string_value
        elif kind == "int_value":
            out[kv.key] = value.int_value
        else:
            out[kv.key] = any_value(value)
    return out


# JSON read by the C scanner directly: `json.loads` adds two regular-expression matches and
# three calls around it, which cost more than reading a short message list. Whatever the fast
# path does not take as it is (leading or trailing text, a BOM, an error) goes to `json.loads`,
# so the value, and the error raised, stay its.
_scan_once = json.JSONDecoder().scan_once
_JSON_SPACE = " \t\n\r"


def loads(text: str) -> Any:
    """`json.loads(text)` for a `str`, faster for a document without surrounding space."""
    try:
        value, end = _scan_once(text, 0)
    except (StopIteration, ValueError):
        return json.loads(text)  # raises as it does
    if end != len(text) and text[end:].strip(_JSON_SPACE):
        return json.loads(text)  # extra data: its error
    return value


_WHOLE = (int, bool)  # kept as they are, as is a string of at most ATTRIBUTE_MAX_CHARS


def _bounded(value: Any, cut: list[bool], depth: int = 0) -> Any:
    kind = type(value)
    if (kind is str and len(value) <= ATTRIBUTE_MAX_CHARS) or kind in _WHOLE:
        return value  # the usual value, told apart without the chain below
    if isinstance(value, str) and len(value) > ATTRIBUTE_MAX_CHARS:
        cut[0] = True
        return value[:ATTRIBUTE_MAX_CHARS]
    if isinstance(value, list | dict) and depth >= MAX_DEPTH:
        cut[0] = True
        return TOO_DEEP
    if isinstance(value, list):
        if len(value) > LIST_MAX_ITEMS:
            cut[0] = True
        return [
            v
            if (type(v) is str and len(v) <= ATTRIBUTE_MAX_CHARS) or type(v) in _WHOLE
            else _bounded(v, cut, depth + 1)  # the usual items without a call
            for v in value[:LIST_MAX_ITEMS]
        ]
    if isinstance(value, dict):
        return {
            k: v
            if (type(v) is str and len(v) <= ATTRIBUTE_MAX_CHARS) or type(v) in _WHOLE
            else _bounded(v, cut, depth + 1)
            for k, v in list(value.items())[:LIST_MAX_ITEMS]
        }
    if isinstance(value, float) and not math.isfinite(value):  # NaN, Infinity: not JSON
        return None
    return value


def bounded_value(value: Any) -> tuple[Any, bool]:
    """One attribute's value as `bounded` keeps it, and whether something of it was cut."""
    flag = [False]
    return _bounded(value, flag), flag[0]


def bounded(
    attributes: dict[str, Any], shared: tuple[Any, tuple[Any, bool]] | None = None
) -> dict[str, Any]:
    """At most 128 keys with strings of at most 4096 characters; what was cut is named.
    `shared`: a value that many spans' attributes hold (the resource's) and its `bounded_value`,
    made once per request instead of once per span."""
    out: dict[str, Any] = {}
    cut_keys: list[str] = []
    for i, (key, value) in enumerate(attributes.items()):
        if i >= ATTRIBUTES_MAX_KEYS:
            out["observatory.dropped_attributes"] = len(attributes) - ATTRIBUTES_MAX_KEYS
            break
        kind = type(value)  # most values are short strings and numbers, kept as they are
        if (kind is str and len(value) <= ATTRIBUTE_MAX_CHARS) or kind in _WHOLE:
            out[key[:256]] = value
            continue
        if shared is not None and value is shared[0]:
            kept, was_cut = shared[1]
            out[key[:256]] = dict(kept) if type(kept) is dict else kept  # a row's own copy
            if was_cut:
                cut_keys.append(key)
            continue
        flag = [False]
        out[key[:256]] = _bounded(value, flag)
        if flag[0]:
            cut_keys.append(key)
    if cut_keys:
        out["observatory.cut_attributes"] = cut_keys[:LIST_MAX_ITEMS]
    return out


def as_list(value: Any) -> list:
    """A list attribute, also when it arrives as a JSON string (some SDKs can only send strings)."""
    if isinstance(value, list):
        return value
    if isinstance(value, str):
        try:
            parsed = loads(value)
        except (ValueError, RecursionError):
            return [value]
        return parsed if isinstance(parsed, list) else [value]
    return [] if value is None else [value]


def as_object(value: Any) -> dict | None:
    if isinstance(value, dict):
        return value
    if isinstance(value, str):
        try:
            parsed = loads(value)
        except (ValueError, RecursionError):
            return None
        return parsed if isinstance(parsed, dict) else None
    return None
