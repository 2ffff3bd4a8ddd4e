"""Traces: filter, page through spans or whole traces, open one as a tree and timeline."""

import streamlit as st

from observatory_core.accounts.permissions import Permission
from observatory_core.traces.query import sorts_for
from observatory_core.ui import cached, days_view, filters, tables, trace_view
from observatory_core.ui.session import current_scope
from observatory_core.ui.zone import time_label

PAGE_PARAMS = frozenset({"mode", "sort", "dir", "size", "trace", days_view.PARAM})
SORT_LABELS = {
    "start_time": "Time",
    "duration_ms": "Duration",
    "total_cost_usd": "Cost",
    "total_tokens": "Tokens",
}

scope = current_scope()
spec = filters.sidebar(scope, PAGE_PARAMS, page="traces")
SORTS = sorts_for(scope)  # no sort by a field the role may not see
st.title("Traces")

q = st.query_params
top = st.columns([2, 2, 1, 1, 1])
mode = (
    top[0].segmented_control(
        "Show",
        ["spans", "traces"],
        default=q.get("mode", "spans"),
        format_func=str.title,
        key="mode",
    )
    or "spans"
)
sort = top[1].selectbox(
    "Sort by",
    SORTS,
    index=SORTS.index(q.get("sort", "start_time")) if q.get("sort") in SORTS else 0,
    format_func=SORT_LABELS.get,
)
direction = top[2].selectbox(
    "Order",
    ["desc", "asc"],
    index=1 if q.get("dir") == "asc" else 0,
    format_func={"desc": "Highest first", "asc": "Lowest first"}.get,
)
size = top[3].selectbox("Rows", [25, 50, 100, 250, 1000], index=1)
by_day = top[4].toggle(
    "By day",
    value=q.get(days_view.PARAM) == "day",
    key=f"by_day_{q.get(days_view.PARAM)}",  # a day clicked turns it off through the URL
    help="The list grouped by the days of your time zone; click a day to list it.",
)
for key, value, default in (
    (days_view.PARAM, "day" if by_day else "", ""),
    ("mode", mode, "spans"),
    ("sort", sort, "start_time"),
    ("dir", direction, "desc"),
):
    if value != default:
        q[key] = value
    elif key in q:
        del q[key]

if by_day:
    days_view.grouped(scope, spec, mode)
    st.stop()

view = (spec.to_json(), mode, sort, direction, size)
if st.session_state.get("_tr_view") != view:  # a new question starts at the first page
    st.session_state["_tr_view"], st.session_state["_tr_cursors"] = view, [None]
cursors = st.session_state["_tr_cursors"]
page = cached.span_page(scope, spec.to_json(), mode, sort, direction, size, cursors[-1], None)

if not page.rows:
    st.info(
        "No spans match these filters. Widen the time window or clear a filter in the sidebar.",
        icon=":material/search_off:",
    )
    st.stop()

frame, columns = tables.styled(tables.page_frame(page))
selected = tables.selectable(frame, columns, f"tbl{len(cursors)}")
nav = st.columns([1, 1, 6])
if nav[0].button("← Previous", disabled=len(cursors) == 1):
    cursors.pop()
    st.rerun()
if nav[1].button("Next →", disabled=page.next_cursor is None):
    cursors.append(page.next_cursor)
    st.rerun()
nav[2].caption(
    f"Page {len(cursors)} · {len(page.rows)} rows · read at {time_label(page.as_of, seconds=True)} · "
    "click a row to open its trace"
)
if scope.can(Permission.EXPORTS_CREATE) and st.button(
    "Export these rows", icon=":material/download:"
):
    st.switch_page("pages/exports.py", query_params=spec.to_query_params())

if selected:
    q["trace"] = page.rows[selected[0]]["trace_id"]
if trace_id := q.get("trace"):
    detail = cached.trace(scope, trace_id)
    if detail is None:
        st.warning("That trace is not in your projects (or no longer exists).")
    else:
        trace_view.show(detail)
