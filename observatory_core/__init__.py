"""LLM Observatory core: everything below the Streamlit pages.

Nothing in this package outside `observatory_core.ui` imports Streamlit, so the same code
serves the app, the worker, the CLI, the HTTP routes and the tests.
"""
