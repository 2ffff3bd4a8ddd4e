"""The Sessions view: sessions (the spans' `session_id`) with their traces, and one session's
traces in order as a conversation.

A session's traces under a filter are the traces the explorer lists, in traces mode, for
`session_ids=<session>` and the same filter: those holding a matching span of the session.
Their figures are whole-tree totals read from the maintained `trace_totals` (as the explorer's
tree totals are, `traces/trace_lists.py`), or, on the span store, summed from the trees'
spans, each one stored row there (`Store.sums_trees_from_spans`), so a span racing writers
stored twice and the fold deleted is not summed twice, as the trace totals' rows still sum it:
- `trace_count`: those traces;
- `first_seen`, `last_seen`: the first span start and the last span end among them, and
  `duration_ms` the time between;
- `total_cost_usd`, `error_count`: summed over their trees (every span that counts; a viewer
  gets no cost);
- `user_id`: the session's user (the lowest id when its matching spans name several).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import BigInteger, Float, Select, case, cast, func, or_, select, true
from sqlalchemy.engine import Engine

from observatory_core.accounts.permissions import Permission
from observatory_core.accounts.scope import Scope, scoped_spans, span_conditions
from observatory_core.accounts.visibility import can_see
from observatory_core.base.errors import UserError
from observatory_core.filters.spec import FilterSpec
from observatory_core.semantic.duplicates import counted
from observatory_core.storage.dialect import epoch_us
from observatory_core.storage.schema import spans, trace_totals
from observatory_core.storage.stores import store_for
from observatory_core.traces.grouped import (
    GroupPage,
    check_page,
    id_search,
    matching_spans,
    read_page,
    through_index,
)
from observatory_core.traces.trace_lists import summed_totals

SORTS = (
    "last_seen",
    "first_seen",
    "trace_count",
    "duration_ms",
    "total_cost_usd",
    "error_count",
    "session_id",
)
COLUMNS = (
    "session_id",
    "user_id",
    "trace_count",
    "first_seen",
    "last_seen",
    "duration_ms",
    "total_cost_usd",
    "error_count",
)
# Traces one session page carries: a bot looping in one session must not become one answer of
# megabytes of text. The page says how many were left out.
MAX_SESSION_TRACES = 200


def session_columns(scope: Scope) -> tuple[str, ...]:
    return tuple(c for c in COLUMNS if c != "total_cost_usd" or can_see(scope, c))


def _trees(engine: Engine, scope: Scope, traces: Select) -> Select:
    """Per trace of `traces` (a SELECT of trace ids): its totals over the scope's spans that
    count. From `trace_totals`, or summed from the spans where the store says so."""
    if not store_for(engine).sums_trees_from_spans:
        return summed_totals(scope, trace_totals.c.trace_id.in_(traces))
    c = spans.c
    return (
        select(
            c.trace_id,
            func.coalesce(func.sum(c.total_cost_usd), 0.0).label("total_cost_usd"),
            cast(func.coalesce(func.sum(c.total_tokens), 0), BigInteger).label("total_tokens"),
            cast(func.count(), BigInteger).label("span_count"),
            cast(func.sum(case((c.status == "error", 1), else_=0)), BigInteger).label(
                "error_count"
            ),
            func.min(c.start_time).label("first_start"),
            func.max(c.end_time).label("last_end"),
        )
        .select_from(spans)
        .where(*span_conditions(scope), counted(c), c.trace_id.in_(traces))
        .group_by(c.trace_id)
    )


def _sessions_of(engine: Engine, pairs, scope: Scope, shown: tuple[str, ...]):
    """One row per session from its (session, trace, user) rows (a CTE: read once, though
    named twice) and the traces' totals."""
    p = pairs.c
    tree = _trees(engine, scope, select(p.trace_id)).subquery("tree")
    t = tree.c
    first, last = func.min(t.first_start), func.max(t.last_end)
    figures = {
        "user_id": func.min(p.user_id),
        "trace_count": func.count(),
        "first_seen": first,
        "last_seen": last,
        # plain types: PostgreSQL's sums of bigints and epoch arithmetic are numeric
        "duration_ms": cast((epoch_us(last) - epoch_us(first)) / 1000.0, Float),
        "total_cost_usd": cast(func.coalesce(func.sum(t.total_cost_usd), 0.0), Float),
        "error_count": cast(func.coalesce(func.sum(t.error_count), 0), BigInteger),
    }
    return (
        select(p.session_id, *(v.label(k) for k, v in figures.items() if k in shown))
        .select_from(pairs.join(tree, t.trace_id == p.trace_id))
        .group_by(p.session_id)
    )


def list_sessions(
    engine: Engine,
    scope: Scope,
    spec: FilterSpec,
    *,
    id_contains: str | None = None,
    sort: str = "last_seen",
    direction: str = "desc",
    limit: int = 50,
    offset: int = 0,
    now: datetime | None = None,
) -> GroupPage:
    """One page of sessions with a span matching `spec`, sorted, searched by session id."""
    check_page(scope, sort, SORTS, direction, limit, offset, id_contains)
    as_of = now or datetime.now(UTC)
    c = spans.c
    pairs = through_index(
        engine,
        select(c.session_id, c.trace_id, func.min(c.user_id).label("user_id"))
        .select_from(spans)
        .where(
            *matching_spans(engine, scope, spec, as_of, c.session_id),
            *id_search(engine, c.session_id, id_contains),
        )
        .group_by(c.session_id, c.trace_id),
        spec,
        "ix_spans_org_sessions_window",
    ).cte("pairs")
    grouped = _sessions_of(engine, pairs, scope, session_columns(scope))
    return read_page(engine, grouped, "session_id", sort, direction, limit, offset, as_of)


@dataclass(frozen=True)
class Session:
    session_id: str
    turns: list[dict]  # one per trace, by first start: totals, and its text when visible
    trace_count: int  # every trace of the session; `turns` holds the first MAX_SESSION_TRACES
    first_seen: datetime
    last_seen: datetime
    total_cost_usd: float | None  # None: the role may not see costs
    users: list[str]
    text_shown: bool  # False: the role may not see prompt and answer text

    @property
    def omitted(self) -> int:
        return max(self.trace_count - len(self.turns), 0)

    @property
    def duration_ms(self) -> float:
        return (self.last_seen - self.first_seen).total_seconds() * 1000


def _texts(conn, scope: Scope, ids: list[str], column) -> dict[str, str]:
    """Per trace, the text of `column` that stands for the turn: the root's, else the first
    LLM call's input (the last one's output, for `output_text`)."""
    c = spans.c
    latest = column is c.output_text
    rank = func.row_number().over(
        partition_by=c.trace_id,
        order_by=(
            c.parent_span_id.is_(None).desc(),
            c.start_time.desc() if latest else c.start_time.asc(),
            c.id.desc() if latest else c.id.asc(),
        ),
    )
    ranked = (
        scoped_spans(scope, c.trace_id, column.label("text"), rank.label("rank"))
        .where(
            c.trace_id.in_(ids),
            column.is_not(None),
            or_(c.parent_span_id.is_(None), c.llm_call == true()),
        )
        .subquery("ranked")
    )
    query = select(ranked.c.trace_id, ranked.c.text).where(ranked.c.rank == 1)
    return dict(conn.execute(query).all())


def _root_names(conn, scope: Scope, ids: list[str]) -> dict[str, str]:
    """Per trace, its counted root span's name (a twin set aside names no turn, as in the
    trace totals). Should a trace have two roots, the one of the highest id: what a rebuild of
    the trace totals picks (docs/span-store-internals.md)."""
    c = spans.c
    query = (
        scoped_spans(scope, c.trace_id, c.name)
        .where(c.trace_id.in_(ids), c.parent_span_id.is_(None), counted(c))
        .order_by(c.id)
    )
    return dict(conn.execute(query).all())


def get_session(engine: Engine, scope: Scope, session_id: str) -> Session | None:
    """The session's traces in order (every one, whatever the filter: a conversation is read
    whole), or None when no span of the caller's scope carries the session id."""
    scope.require(Permission.METRICS_READ)
    if not isinstance(session_id, str) or not 0 < len(session_id) <= 200:
        raise UserError("A session id is 1 to 200 characters.")
    c = spans.c
    pairs = (
        scoped_spans(scope, c.session_id, c.trace_id, func.min(c.user_id).label("user_id"))
        .where(c.session_id == session_id, counted(c))
        .group_by(c.session_id, c.trace_id)
        .cte("pairs")
    )
    costs = can_see(scope, "total_cost_usd")
    text_shown = can_see(scope, "input_text")
    tree = _trees(engine, scope, select(pairs.c.trace_id)).subquery()
    t = tree.c
    turns_query = (
        select(
            t.trace_id,
            pairs.c.user_id,
            t.first_start,
            t.last_end,
            t.span_count,
            t.error_count,
            t.total_tokens,
            t.total_cost_usd,
        )
        .select_from(tree.join(pairs, pairs.c.trace_id == t.trace_id))
        .order_by(t.first_start, t.trace_id)
        .limit(MAX_SESSION_TRACES)
    )
    whole = _sessions_of(engine, pairs, scope, session_columns(scope)).subquery()
    with engine.connect() as conn:
        summary = conn.execute(select(whole)).mappings().first()
        if summary is None:
            return None
        named = scoped_spans(scope, c.user_id).where(
            c.session_id == session_id, counted(c), c.user_id.is_not(None)
        )
        users = sorted(conn.execute(named.distinct().limit(100)).scalars())
        turns = [dict(r) for r in conn.execute(turns_query).mappings()]
        ids = [r["trace_id"] for r in turns]
        names = _root_names(conn, scope, ids) if ids else {}
        inputs = _texts(conn, scope, ids, c.input_text) if text_shown and ids else {}
        outputs = _texts(conn, scope, ids, c.output_text) if text_shown and ids else {}
    for r in turns:
        r["name"] = names.get(r["trace_id"])
        r["duration_ms"] = (r.pop("last_end") - r["first_start"]).total_seconds() * 1000
        if not costs:
            del r["total_cost_usd"]
        if text_shown:
            r["input_text"] = inputs.get(r["trace_id"])
            r["output_text"] = outputs.get(r["trace_id"])
    return Session(
        session_id=session_id,
        turns=turns,
        trace_count=int(summary["trace_count"]),
        first_seen=summary["first_seen"],
        last_seen=summary["last_seen"],
        total_cost_usd=float(summary["total_cost_usd"]) if costs else None,
        users=users,
        text_shown=text_shown,
    )
