"""The Traces page through AppTest: URL-bound filters, the table, paging, the trace detail."""

import pytest
from streamlit.testing.v1 import AppTest

from observatory_core.accounts.users import scope_for
from observatory_core.filters.spec import FilterSpec
from observatory_core.traces.query import list_spans
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
    assert next(m for m in at.sidebar.multiselect if m.label == "Model").value == ["gpt-4o"]
    assert next(b for b in at.sidebar.selectbox if b.label == "Time").value == "7d"
    table = at.dataframe[0].value
    expected = list_spans(
        engine,
        scope_for(engine, "admin-user"),
        FilterSpec(relative="7d", models=("gpt-4o",)),
        limit=50,
    )
    assert len(table) == len(expected.rows) > 0
    assert set(table["model"]) == {"gpt-4o"}


def test_first_page_equals_the_core_and_next_page_continues(app_env):
    engine, _ = app_env
    at = open_traces(app_env, params={"relative": "7d"})
    scope = scope_for(engine, "admin-user")
    first = list_spans(engine, scope, FilterSpec(relative="7d"), limit=50)
    assert list(at.dataframe[0].value["span_id"]) == [r["span_id"] for r in first.rows]
    next_button = next(b for b in at.button if b.label == "Next →")
    at = next_button.click().run()
    second = list_spans(
        engine, scope, FilterSpec(relative="7d"), limit=50, cursor=first.next_cursor
    )
    assert list(at.dataframe[0].value["span_id"]) == [r["span_id"] for r in second.rows]
    assert "Page 2" in at.caption[-1].value


def test_trace_link_opens_the_detail_with_a_timeline(app_env):
    engine, _ = app_env
    scope = scope_for(engine, "admin-user")
    root = list_spans(
        engine, scope, FilterSpec(relative="7d", operations=("invoke_agent",)), limit=1
    ).rows[0]
    at = open_traces(app_env, params={"relative": "7d", "trace": root["trace_id"]})
    assert not at.exception
    assert any(root["trace_id"] in s.value for s in at.subheader)
    assert {m.label for m in at.metric} >= {"Duration", "Spans", "Tokens", "Cost", "Errors"}
    assert len(at.expander) >= 3  # the root and its children


def test_filters_with_no_match_show_the_empty_state(app_env):
    at = open_traces(app_env, params={"models": ["no-such-model"]})
    assert not at.exception
    assert "No spans match these filters" in at.info[0].value
    assert not at.dataframe


def test_bad_link_values_are_explained_not_raised(app_env):
    at = open_traces(app_env, params={"min_cost_usd": "lots"})
    assert not at.exception
    assert any("min_cost_usd" in e.value for e in at.sidebar.error)
    assert at.dataframe  # the page still works with the default filters


def test_viewer_sees_no_cost_column_and_billing_has_no_traces_page(app_env):
    at = open_traces(app_env, role="viewer", params={"relative": "7d"})
    assert "total_cost_usd" not in at.dataframe[0].value.columns
    billing = login(start(), "billing-user")
    with pytest.raises(ValueError, match="Could not find a navigation page") as info:
        billing.switch_page("pages/traces.py")  # billing may not read traces: not routed
    assert "traces.py" not in str(info.value).split("Known pages:")[1]


def test_viewer_is_offered_no_cost_sort_or_filter_and_a_cost_link_says_so(app_env):
    """The page offers only what the role may use, the same rule the core and API apply; a
    pasted link with a cost filter is not applied, and the sidebar says why."""
    admin = open_traces(app_env, params={"relative": "7d"})
    sorts = next(b for b in admin.selectbox if b.label == "Sort by").options
    assert "Cost" in sorts
    assert any(n.label == "Cost USD min" for n in admin.sidebar.number_input)
    at = open_traces(
        app_env,
        role="viewer",
        params={"relative": "7d", "min_cost_usd": "0.05", "sort": "total_cost_usd"},
    )
    assert not at.exception, at.exception
    sorts = next(b for b in at.selectbox if b.label == "Sort by")
    assert "Cost" not in sorts.options and sorts.value == "start_time"
    assert not any("Cost" in n.label for n in at.sidebar.number_input)
    assert any("min_cost_usd" in w.value for w in at.sidebar.warning)
    assert at.dataframe and "total_cost_usd" not in at.dataframe[0].value.columns
