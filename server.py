"""The one server process: the Streamlit UI (app.py) plus the HTTP routes beside it."""

import streamlit as st

from observatory_core.http.routes import routes

app = st.App("app.py", routes=routes())
