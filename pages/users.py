"""Users: each end user's requests, cost, tokens, errors and traces under the sidebar's
filter, sorted and searched; a click opens their traces in the explorer."""

import streamlit as st

from observatory_core.traces.users import SORTS
from observatory_core.ui import filters, people_view
from observatory_core.ui.session import current_scope

PAGE_PARAMS = frozenset({"find", "sort", "dir", "user"})

scope = current_scope()
spec = filters.sidebar(scope, PAGE_PARAMS, page="users")
st.title("Users")
st.caption(
    "End users named by the spans' user id. Requests are LLM calls; cost, tokens and errors "
    "are theirs. Traces are the traces holding one of the user's spans."
)
id_contains, sort, direction, size = people_view.controls(scope, SORTS, "user")
view = (spec.to_json(), id_contains, sort, direction, size)
offset = people_view.offset(view, "users")
page = people_view.listed(
    "users", scope, spec.to_json(), id_contains, sort, direction, size, offset
)

if not page.rows:
    st.info(
        "No user matches. Widen the time window, clear a filter in the sidebar or the search.",
        icon=":material/search_off:",
    )
    st.stop()

people_view.top_chart(page, "user_id", sort)
selected = people_view.table(page, "users", "user")
if selected:
    st.query_params["user"] = selected["user_id"]
if user := st.query_params.get("user"):
    st.subheader(f"User {user}")
    people_view.explorer_links(scope, spec, "Their", user_ids=(user,))
