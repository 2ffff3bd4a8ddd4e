"""Helpers the routers share: error responses for the OpenAPI document, filters from the
query string, and a short-lived cache for repeated read-only queries."""

from __future__ import annotations

import json
import threading
import time
from datetime import date, datetime
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse

from observatory_core.accounts.scope import Scope
from observatory_core.api.context import ApiError
from observatory_core.api.schemas import ErrorBody, filter_params_model
from observatory_core.base.errors import UserError
from observatory_core.base.zones import Zone, parse_zone
from observatory_core.filters.spec import FilterSpec, filter_names

_DESCRIPTIONS = {
    400: "Bad input; the message names the field and the fix.",
    401: "No key, an unknown or revoked key, or a key without the read scope.",
    403: "The key's role does not allow this.",
    404: "Not found in the key's org (other orgs' ids are never revealed).",
    409: "The export is in a state that does not allow this, or the name is taken.",
    422: "A parameter has the wrong type or is out of range.",
    429: "Over the key's rate limit, or too many of its heavy reads at once; see Retry-After.",
    503: "The database is unavailable (`unavailable`) or the query ran past its time budget "
    "(`timeout`: narrow it); see Retry-After.",
}
CACHE_SECONDS = 15.0


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {
        code: {"model": ErrorBody, "description": _DESCRIPTIONS[code]}
        for code in (401, 422, 429, 503, *codes)
    }


def _filter_parameters() -> list[dict[str, Any]]:
    """`FilterParams` as OpenAPI query parameters, as FastAPI would write them for a query model.
    Routes declare them through `openapi_extra` and parse them once, in `filter_spec`: as a
    parameter model FastAPI re-validated all 26 fields on every request (about 1 ms of the
    server's ~6 ms per request under load) only to hand over strings `filter_spec` parses anyway."""
    properties = filter_params_model().model_json_schema()["properties"]
    return [
        {
            "name": name,
            "in": "query",
            "required": False,
            "schema": schema,
            **({"description": schema["description"]} if "description" in schema else {}),
        }
        for name, schema in properties.items()
    ]


# The routes' `openapi_extra` (the same object): `refresh_filter_parameters` updates it in
# place when an app is created, so the document lists every field declared by then.
FILTER_PARAMETERS: dict[str, Any] = {"parameters": _filter_parameters()}


def refresh_filter_parameters() -> None:
    FILTER_PARAMETERS["parameters"] = _filter_parameters()


TZ_DESCRIPTION = (
    "An IANA time zone (e.g. America/New_York, Asia/Kolkata); days, weeks and hours are that "
    "zone's, and times are also given in it (`*_local`, with their offset, when tz is given). Default UTC."
)


def zone_of(tz: str | None) -> Zone:
    """The `tz` parameter as a `Zone`; an unknown name is a 400 that says what to send."""
    try:
        return parse_zone(tz)
    except UserError as exc:
        raise ApiError(400, "bad_request", f"tz: {exc}") from None


def with_local_times(rows: list[dict], zone: Zone | None, names: tuple[str, ...]) -> list[dict]:
    """Each row with `<name>_local` (offset-qualified, in `zone`) next to each UTC time; rows as
    they were when the caller named no zone (answers keep their shape for existing clients)."""
    if zone is None:
        return rows
    for row in rows:
        for name in names:
            value = row.get(name)
            if isinstance(value, datetime):
                row[f"{name}_local"] = zone.iso(value)
    return rows


def filter_spec(request: Request, own: frozenset[str]) -> FilterSpec:
    """The `FilterSpec` of the query string; names neither a filter nor the route's own are refused."""
    params = request.query_params
    names = frozenset(filter_names())
    unknown = sorted(set(params) - names - own)
    if unknown:
        raise ApiError(
            400,
            "bad_request",
            f"Unknown query parameter {unknown[0]!r}; filters are: {', '.join(sorted(names))}.",
        )
    return FilterSpec.from_query_params({k: params.getlist(k) for k in params if k in names})


class TtlCache:
    """Answers to identical read queries by the same kind of caller, kept for 15 seconds."""

    def __init__(self, seconds: float = CACHE_SECONDS, size: int = 512) -> None:
        self.seconds, self.size = seconds, size
        self._items: dict[tuple, tuple[float, Any]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def key(scope: Scope, *parts: Any) -> tuple:
        projects = tuple(sorted(scope.project_ids)) if scope.project_ids is not None else None
        return (scope.org_id, projects, scope.role.value, *parts)

    def get(self, key: tuple) -> Any | None:
        with self._lock:
            hit = self._items.get(key)
        if hit and time.monotonic() - hit[0] < self.seconds:
            return hit[1]
        return None

    def get_or_compute(self, key: tuple, compute) -> tuple[Any, bool]:
        """The cached answer (and True), or a fresh one, kept (and False)."""
        value = self.get(key)
        if value is not None:
            return value, True
        value = compute()
        self.put(key, value)
        return value, False

    def put(self, key: tuple, value: Any) -> None:
        with self._lock:
            if len(self._items) >= self.size:
                self._items.clear()
            self._items[key] = (time.monotonic(), value)


cache = TtlCache()


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, date):  # a local day ("2026-11-01")
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON")


class FastJSON(JSONResponse):
    """JSON straight from the rows: span pages are already plain values (dates aside), so the
    response model's per-row validation would only spend time; the model still documents them."""

    def render(self, content: Any) -> bytes:
        return json.dumps(
            content, default=_plain, ensure_ascii=False, separators=(",", ":")
        ).encode()
