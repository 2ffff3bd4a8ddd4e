"""The only part of the core that imports Streamlit: session, login, navigation, caches, widgets."""
