"""The Users and Sessions pages' parts: cached reads, the sort and search bar, the table with
paging, the chart of the page's top rows, links into the explorer, and a session drawn as a
conversation."""

from __future__ import annotations

import plotly.graph_objects as go
import polars as pl
import streamlit as st

from observatory_core.accounts.permissions import Permission
from observatory_core.accounts.scope import Scope
from observatory_core.accounts.visibility import visible
from observatory_core.filters.spec import FilterSpec
from observatory_core.traces.grouped import GroupPage
from observatory_core.traces.sessions import Session, get_session, list_sessions
from observatory_core.traces.users import list_users
from observatory_core.ui import format, tables
from observatory_core.ui.session import span_engine
from observatory_core.ui.zone import local_frame, time_column, time_label

LABELS = {
    "user_id": "User",
    "session_id": "Session",
    "request_count": "Requests (LLM calls)",
    "total_cost_usd": "Cost",
    "total_tokens": "Tokens",
    "error_count": "Errors",
    "trace_count": "Traces",
    "first_seen": "First seen",  # on the reader's clock, the header names the zone
    "last_seen": "Last seen",
    "duration_ms": "Duration",
}
UNITS = {
    "request_count": "count",
    "total_cost_usd": "usd",
    "total_tokens": "tokens",
    "error_count": "count",
    "trace_count": "count",
    "duration_ms": "ms",
}
SIZES = [25, 50, 100, 250]
TIMES = ("first_seen", "last_seen")


LISTS = {"users": list_users, "sessions": list_sessions}


@st.cache_data(ttl=30, show_spinner="Adding up…")
def listed(
    kind: str,
    scope: Scope,
    spec_json: str,
    id_contains: str,
    sort: str,
    direction: str,
    size: int,
    offset: int,
) -> GroupPage:
    """A page of users or sessions (`kind`), fresh for 30 s, read where spans are read (the
    span store's when it is set, docs/scale.md)."""
    return LISTS[kind](
        span_engine(),
        scope,
        FilterSpec.from_json(spec_json),
        id_contains=id_contains or None,
        sort=sort,
        direction=direction,
        limit=size,
        offset=offset,
    )


@st.cache_data(ttl=30, show_spinner="Opening the session…")
def session(scope: Scope, session_id: str) -> Session | None:
    return get_session(span_engine(), scope, session_id)


def controls(scope: Scope, sorts: tuple[str, ...], noun: str) -> tuple[str, str, str, int]:
    """The search box, sort, order and page size; the sort kept in the URL."""
    q = st.query_params
    sorts = visible(scope, sorts)
    top = st.columns([3, 2, 1, 1])
    id_contains = top[0].text_input(
        f"Find a {noun}", value=q.get("find", ""), placeholder="part of the id"
    )
    chosen = q.get("sort") if q.get("sort") in sorts else sorts[0]
    sort = top[1].selectbox("Sort by", sorts, index=sorts.index(chosen), format_func=LABELS.get)
    direction = top[2].selectbox(
        "Order",
        ["desc", "asc"],
        index=1 if q.get("dir") == "asc" else 0,
        format_func={"desc": "Highest first", "asc": "Lowest first"}.get,
    )
    size = top[3].selectbox("Rows", SIZES, index=1)
    for key, value, default in (
        ("find", id_contains.strip(), ""),
        ("sort", sort, sorts[0]),
        ("dir", direction, "desc"),
    ):
        if value != default:
            q[key] = value
        elif key in q:
            del q[key]
    return id_contains.strip(), sort, direction, size


def offset(view: tuple, key: str) -> int:
    """The page's offset; a new question (filter, search, sort) starts at the first page."""
    state = st.session_state
    if state.get(f"_{key}_view") != view:
        state[f"_{key}_view"], state[f"_{key}_offset"] = view, 0
    return state[f"_{key}_offset"]


def table(page: GroupPage, key: str, noun: str) -> dict | None:
    """The page as a table with Previous/Next; returns the row a click selected."""
    frame = local_frame(pl.DataFrame(page.rows, infer_schema_length=None), *TIMES)
    shown, config = format.table_columns(frame, UNITS, LABELS)
    for name in TIMES:
        if name in frame.columns:
            config[name] = time_column(LABELS[name], fmt="MM-DD HH:mm")
    for name in frame.columns:
        config.setdefault(name, st.column_config.Column(LABELS.get(name, name)))
    chosen = tables.selectable(shown, config, f"{key}_tbl{page.offset}")
    nav = st.columns([1, 1, 6])
    state = st.session_state
    if nav[0].button("← Previous", disabled=page.offset == 0):
        state[f"_{key}_offset"] = max(page.offset - page.limit, 0)
        st.rerun()
    if nav[1].button("Next →", disabled=page.next_offset is None):
        state[f"_{key}_offset"] = page.next_offset
        st.rerun()
    last = page.offset + len(page.rows)
    nav[2].caption(
        f"{page.offset + 1:,}-{last:,} of {page.total:,} {noun}s · read at "
        f"{time_label(page.as_of, seconds=True)} · click a row to open it"
    )
    return page.rows[chosen[0]] if chosen else None


def top_chart(page: GroupPage, key: str, sort: str) -> None:
    """The page's first rows by the sorted figure, as bars (when it is a number)."""
    if sort not in UNITS or not page.rows:
        return
    rows = page.rows[:15]
    unit = UNITS[sort]
    values = [r[sort] for r in rows]
    size, word, _ = format.duration_unit(values) if unit == "ms" else (1, None, 0)
    fig = go.Figure(
        go.Bar(
            x=[v / size for v in values],
            y=[r[key] for r in rows],
            orientation="h",
            hovertext=[f"{r[key]}: {format.by_unit(unit, r[sort])}" for r in rows],
            hoverinfo="text",
        )
    )
    fig.update_layout(
        height=60 + 22 * len(rows),
        margin={"l": 10, "r": 10, "t": 30, "b": 10},
        yaxis={"autorange": "reversed", "automargin": True},
        xaxis_title=f"{LABELS[sort]} ({word})" if word else LABELS[sort],
        xaxis_tickprefix="$" if unit == "usd" else None,
        xaxis_separatethousands=True,
        title=f"The page's first {len(rows)} by {LABELS[sort].lower()}",
    )
    st.plotly_chart(fig, width="stretch")


def explorer_links(scope: Scope, spec: FilterSpec, whose: str, **ids: tuple[str, ...]) -> None:
    """Links to the Traces explorer (traces mode), the Sessions view and a new export, under
    the page's filter narrowed to `ids` (user_ids=...): the same FilterSpec, so the same spans."""
    narrowed = spec.replace(**ids).to_query_params()
    cols = st.columns(3)
    if scope.can(Permission.TRACES_READ):
        cols[0].page_link(
            "pages/traces.py",
            label=f"{whose} traces",
            icon=":material/account_tree:",
            query_params={**narrowed, "mode": "traces"},
        )
    if "session_ids" not in ids:
        cols[1].page_link(
            "pages/sessions.py",
            label="Their sessions",
            icon=":material/forum:",
            query_params=narrowed,
        )
    if scope.can(Permission.EXPORTS_CREATE):  # the same spans, as a file
        cols[2].page_link(
            "pages/exports.py",
            label=f"Export {whose.lower()} spans",
            icon=":material/download:",
            query_params=narrowed,
        )


def conversation(scope: Scope, detail: Session) -> None:
    """The session's traces in order: each a turn with its input and output text (when the
    role may see it), time, duration, tokens and cost."""
    st.subheader(f"Session {detail.session_id}")
    tiles = [
        ("Traces", format.count(detail.trace_count)),
        ("Duration", format.duration_ms(detail.duration_ms)),
        ("Users", ", ".join(detail.users) or format.MISSING),
    ]
    if detail.total_cost_usd is not None:
        tiles.insert(2, ("Cost", format.money(detail.total_cost_usd)))
    for column, (label, value) in zip(st.columns(len(tiles)), tiles, strict=True):
        column.metric(label, value)
    st.caption(
        f"{time_label(detail.first_seen, seconds=True)} to "
        f"{time_label(detail.last_seen, seconds=True)}"
    )
    if detail.omitted:
        st.warning(
            f"This session has {detail.trace_count:,} traces; the first {len(detail.turns):,} "
            "are shown (the figures above cover all of them).",
            icon=":material/content_cut:",
        )
    if not detail.text_shown:
        st.info(
            "Your role does not show prompt and answer text; each turn lists its figures.",
            icon=":material/visibility_off:",
        )
    for turn in detail.turns:
        facts = [
            time_label(turn["first_start"], seconds=True),
            turn.get("name") or "trace",
            format.duration_ms(turn["duration_ms"]),
            f"{format.count(turn['total_tokens'])} tokens",
        ]
        if "total_cost_usd" in turn:
            facts.append(format.money(turn["total_cost_usd"]))
        if turn["error_count"]:
            facts.append(f"{turn['error_count']} errors")
        st.caption(" · ".join(facts))
        if detail.text_shown:
            with st.chat_message("user"):
                st.text(turn.get("input_text") or "(no input text)")
            with st.chat_message("assistant"):
                st.text(turn.get("output_text") or "(no output text)")
        if scope.can(Permission.TRACES_READ):
            st.page_link(
                "pages/traces.py",
                label=f"Open trace {turn['trace_id'][:12]}…",
                icon=":material/account_tree:",
                query_params={"relative": "all", "trace": turn["trace_id"]},
            )
