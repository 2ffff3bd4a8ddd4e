"""GET /users, /sessions and /sessions/{session_id}: the Users and Sessions views' lists and
one session as a conversation, with the same filters (`FilterSpec`) as every other route, read
where spans are read (`span_engine`: the span store's when it is set, docs/scale.md)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query, Request

from observatory_core.accounts.scope import Scope
from observatory_core.api.common import (
    FILTER_PARAMETERS,
    TZ_DESCRIPTION,
    FastJSON,
    errors,
    filter_spec,
    with_local_times,
    zone_of,
)
from observatory_core.api.context import ApiError, caller, meta, span_engine
from observatory_core.api.people_schemas import SessionBody, SessionPage, UserPage
from observatory_core.traces.grouped import MAX_OFFSET, MAX_PAGE, MAX_SEARCH, GroupPage
from observatory_core.traces.sessions import get_session, list_sessions
from observatory_core.traces.users import list_users

router = APIRouter(tags=["users and sessions"])
OWN = frozenset({"id_contains", "sort", "direction", "limit", "offset", "tz"})
TIMES = ("first_seen", "last_seen")
Tz = Annotated[str | None, Query(max_length=64, description=TZ_DESCRIPTION)]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE)]
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET)]
IdContains = Annotated[
    str | None,
    Query(
        max_length=MAX_SEARCH,
        description="Part of the id, any case (`search` searches prompt text).",
    ),
]


def _page(request: Request, scope: Scope, read, tz: str | None, **kw) -> FastJSON:
    """One page of `read` (list_users, list_sessions) under the query string's filters; with
    `tz`, each time also on that zone's clock (`*_local`)."""
    zone = zone_of(tz) if tz is not None else None
    page: GroupPage = read(span_engine(), scope, filter_spec(request, OWN), **kw)
    body = {
        "data": with_local_times([dict(r) for r in page.rows], zone, TIMES),
        "total": page.total,
        "next_offset": page.next_offset,
    }
    return FastJSON({**body, "meta": meta(request)})


@router.get(
    "/users", response_model=UserPage, responses=errors(400, 403), openapi_extra=FILTER_PARAMETERS
)
def users(
    request: Request,
    scope: Annotated[Scope, Depends(caller)],
    id_contains: IdContains = None,
    sort: Literal[
        "request_count",
        "total_cost_usd",
        "total_tokens",
        "error_count",
        "trace_count",
        "first_seen",
        "last_seen",
        "user_id",
    ] = "request_count",
    direction: Literal["asc", "desc"] = "desc",
    limit: Limit = 50,
    offset: Offset = 0,
    tz: Tz = None,
) -> FastJSON:
    """End users (the spans' user id) with their LLM calls, cost, tokens, errors, traces and
    first and last seen, over the spans the filters select."""
    return _page(
        request,
        scope,
        list_users,
        tz,
        id_contains=id_contains,
        sort=sort,
        direction=direction,
        limit=limit,
        offset=offset,
    )


@router.get(
    "/sessions",
    response_model=SessionPage,
    responses=errors(400, 403),
    openapi_extra=FILTER_PARAMETERS,
)
def sessions(
    request: Request,
    scope: Annotated[Scope, Depends(caller)],
    id_contains: IdContains = None,
    sort: Literal[
        "last_seen",
        "first_seen",
        "trace_count",
        "duration_ms",
        "total_cost_usd",
        "error_count",
        "session_id",
    ] = "last_seen",
    direction: Literal["asc", "desc"] = "desc",
    limit: Limit = 50,
    offset: Offset = 0,
    tz: Tz = None,
) -> FastJSON:
    """Sessions with a span the filters select: their traces, first and last time, duration,
    cost over those traces and user."""
    return _page(
        request,
        scope,
        list_sessions,
        tz,
        id_contains=id_contains,
        sort=sort,
        direction=direction,
        limit=limit,
        offset=offset,
    )


@router.get("/sessions/{session_id}", response_model=SessionBody, responses=errors(400, 403, 404))
def one_session(
    request: Request,
    session_id: Annotated[str, Path(min_length=1, max_length=200)],
    scope: Annotated[Scope, Depends(caller)],
    tz: Tz = None,
) -> FastJSON:
    """The session's traces by first start (at most 200; `trace_count` says how many), each
    with its input and output text when the key's role may see it."""
    zone = zone_of(tz) if tz is not None else None
    session = get_session(span_engine(), scope, session_id)
    if session is None:
        raise ApiError(404, "not_found", f"No session {session_id!r} in your org.")
    data = {
        "session_id": session.session_id,
        "trace_count": session.trace_count,
        "first_seen": session.first_seen,
        "last_seen": session.last_seen,
        "duration_ms": session.duration_ms,
        "total_cost_usd": session.total_cost_usd,
        "users": session.users,
        "turns": with_local_times([dict(t) for t in session.turns], zone, ("first_start",)),
    }
    with_local_times([data], zone, TIMES)
    return FastJSON({"data": data, "meta": meta(request)})
