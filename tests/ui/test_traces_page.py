"""The Traces page through AppTest: URL-bound filters, the table, paging, the trace detail."""

from streamlit.testing.v1 import AppTest

from observatory_core.filters.spec import FilterSpec
from observatory_core.traces.query import list_spans
from observatory_core.users import scope_for
from tests.ui.test_app import login, start


def open_traces(app_env, role="admin", params=None) -> AppTest:
    """A logged-in user opens a Traces link (surviving the login itself is tested in e2e)."""
    at = login(start(), f"{role}-user")
    at.switch_page("pages/traces.py")
    for key, value in (params or {}).items():
        at.query_params[key] = value
    return at.run()


def test_link_filters_fill_the_widgets_and_the_table(app_env):
    engine, _ = app_env
    at = open_traces(app_env, params={"models": ["gpt-4o"], "relative": "7d"})
    assert not at.exception, at.exception
    assert at.multiselect(key="flt_models").value == ["gpt-4o"]
    assert at.selectbox(key="flt_window").value == "7d"
    table = at.dataframe[0].value
    expected = list_spans(
        engine,
        scope_for(engine, "admin-user"),
        FilterSpec(relative="7d", models=("gpt-4o",)),
        limit=50,
    )
    assert len(table) == len(expected.rows) > 0
    assert set(table["model"]) == {"gpt-4o"}
