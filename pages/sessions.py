"""Sessions: conversations named by the spans' session id, with their traces, duration and
cost under the sidebar's filter; a click opens one as a conversation."""

import streamlit as st

from observatory_core.traces.sessions import SORTS
from observatory_core.ui import filters, people_view
from observatory_core.ui.session import current_scope

PAGE_PARAMS = frozenset({"find", "sort", "dir", "session"})

scope = current_scope()
spec = filters.sidebar(scope, PAGE_PARAMS, page="sessions")
st.title("Sessions")
st.caption(
    "Sessions named by the spans' session id: the traces holding one of their spans, from the "
    "first span's start to the last one's end, with the cost of those traces."
)
id_contains, sort, direction, size = people_view.controls(scope, SORTS, "session")
view = (spec.to_json(), id_contains, sort, direction, size)
offset = people_view.offset(view, "sessions")
page = people_view.listed(
    "sessions", scope, spec.to_json(), id_contains, sort, direction, size, offset
)

if page.rows:
    people_view.top_chart(page, "session_id", sort)
    selected = people_view.table(page, "sessions", "session")
    if selected:
        st.query_params["session"] = selected["session_id"]
else:
    st.info(
        "No session matches. Widen the time window, clear a filter in the sidebar or the search.",
        icon=":material/search_off:",
    )

if session_id := st.query_params.get("session"):
    detail = people_view.session(scope, session_id)
    if detail is None:
        st.warning("That session is not in your projects (or no longer exists).")
    else:
        people_view.conversation(scope, detail)
        people_view.explorer_links(scope, spec, "Its", session_ids=(session_id,))
