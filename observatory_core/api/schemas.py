"""The models every route shares (the answer's meta, the error body, the filter parameters);
each route's own are in `<route>_schemas.py`. The OpenAPI document is generated from them."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, create_model

from observatory_core.semantic.field_declaration import FilterKind
from observatory_core.semantic.field_lookups import filter_keys


class Meta(BaseModel):
    request_id: str = Field(
        description="Echoes X-Request-Id when sent; quote it when asking for help."
    )
    execution_ms: float = Field(description="Time spent in the server, in milliseconds.")
    cached: bool = Field(
        description="True when the answer came from the server's short-lived cache."
    )


class ErrorDetail(BaseModel):
    code: str = Field(
        description="Stable: bad_request, unauthorized, forbidden, not_found, conflict, rate_limited."
    )
    message: str = Field(description="What is wrong and what to do about it.")


class ErrorBody(BaseModel):
    error: ErrorDetail
    meta: Meta


class _TimeParams(BaseModel):
    relative: str | None = Field(
        None, description="15m to 365d, e.g. 24h or 7d; 'all' for no time limit. Default 24h."
    )
    start: str | None = Field(
        None, description="ISO 8601 with a time zone, e.g. 2026-11-01T00:00:00Z"
    )
    end: str | None = Field(None, description="ISO 8601 with a time zone; exclusive")


def filter_params_model() -> type[BaseModel]:
    """Every `FilterSpec` key, named as in the app's shareable links: the time window and each
    declared filter (`semantic.fields`), built when asked so a field registered at run time
    is in it. (Unknown parameters are refused by the route, which also knows its own.)"""
    params: dict[str, Any] = {}
    for key, field in filter_keys().items():
        extra = {"description": field.description} if field.description else {}
        if field.filter in (FilterKind.RANGE, FilterKind.SEARCH):
            params[key] = (str | None, Field(None, **extra))
        else:
            params[key] = (list[str], Field([], **extra))
    return create_model("FilterParams", __base__=_TimeParams, **params)


FilterParams = filter_params_model()  # as declared at import; the app rebuilds it when created
