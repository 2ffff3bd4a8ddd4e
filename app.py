"""LLM Observatory: login, then the pages the user's role allows."""

import streamlit as st

from observatory_core.ui import nav, session, zone

st.set_page_config(page_title="LLM Observatory", page_icon=":material/monitoring:", layout="wide")

scope = session.require_login()
st.session_state["scope"] = scope
nav.sidebar_user(scope)
zone.zone_picker(scope)
session.logout_button()
session.run(st.navigation(nav.pages_for(scope)))
