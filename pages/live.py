"""Live: new spans as they arrive (filtered in the sidebar), alert events and export jobs."""

import streamlit as st

from observatory_core.ui import filters, live_view
from observatory_core.ui.session import current_scope

scope = current_scope()
spec = filters.sidebar(scope, frozenset(), page="live")
st.title("Live")
st.caption("The sidebar filters pick the spans; the feed always shows the last 15 minutes.")
live_view.feed(scope, spec)
