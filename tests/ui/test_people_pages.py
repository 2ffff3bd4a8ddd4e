"""The Users and Sessions pages through AppTest: the table equals the core under the sidebar's
filter, search and sort, the links into the explorer, a session as a conversation, roles."""

from __future__ import annotations

from urllib.parse import parse_qs

from streamlit.testing.v1 import AppTest

from observatory_core.accounts.users import scope_for
from observatory_core.filters.spec import FilterSpec
from observatory_core.traces.sessions import get_session, list_sessions
from observatory_core.traces.users import list_users
from tests.ui.test_app import login, start


def open_page(path: str, role: str = "admin", params: dict | None = None) -> AppTest:
    at = login(start(), f"{role}-user")
    at.switch_page(path)
    for key, value in (params or {}).items():
        at.query_params[key] = value
    return at.run()


def _links(at: AppTest) -> dict[str, tuple[str, dict]]:
    """Each page link's label and target (page and query parameters)."""
    return {
        e.proto.label: (e.proto.page, parse_qs(e.proto.query_string)) for e in at.get("page_link")
    }


def test_users_table_equals_the_core_under_the_sidebar_filter(app_env):
    engine, _ = app_env
    at = open_page("pages/users.py", params={"relative": "7d", "environments": ["production"]})
    assert not at.exception, at.exception
    spec = FilterSpec(relative="7d", environments=("production",))
    core = list_users(engine, scope_for(engine, "admin-user"), spec, limit=50)
    table = at.dataframe[0].value
    assert list(table["user_id"]) == [r["user_id"] for r in core.rows] and len(table) > 0
    assert list(table["request_count"]) == [r["request_count"] for r in core.rows]
    assert f"of {core.total:,} users" in at.caption[-1].value


def test_search_and_sort_narrow_the_users(app_env):
    engine, _ = app_env
    at = open_page("pages/users.py", params={"relative": "7d"})
    everyone = list(at.dataframe[0].value["user_id"])
    needle = everyone[0].split("@")[0][:4].upper()
    at.text_input[0].set_value(needle).run()
    found = list(at.dataframe[0].value["user_id"])
    assert found and all(needle.lower() in u.lower() for u in found)
    assert at.query_params["find"] in (needle, [needle])
    next(s for s in at.selectbox if s.label == "Sort by").set_value("total_tokens").run()
    tokens = list(at.dataframe[0].value["total_tokens"])
    assert tokens == sorted(tokens, reverse=True)


def test_a_user_links_to_their_traces_with_the_same_filter(app_env):
    engine, _ = app_env
    user = list_users(engine, scope_for(engine, "admin-user"), FilterSpec(relative="7d")).rows[0]
    at = open_page("pages/users.py", params={"relative": "7d", "user": user["user_id"]})
    assert not at.exception, at.exception
    assert any(user["user_id"] in h.value for h in at.subheader)
    links = _links(at)
    # the explorer's own FilterSpec link: the sidebar's filter plus the user, traces mode
    want = {"relative": ["7d"], "user_ids": [user["user_id"]]}
    assert links["Their traces"] == ("traces", {**want, "mode": ["traces"]})
    assert links["Their sessions"] == ("sessions", want)
    assert links["Export their spans"] == ("exports", want)


def test_viewer_sees_no_cost_and_billing_no_traces_link(app_env):
    engine, _ = app_env
    at = open_page("pages/users.py", "viewer", {"relative": "7d"})
    assert not at.exception, at.exception
    assert "total_cost_usd" not in at.dataframe[0].value.columns
    assert "total_cost_usd" not in next(s for s in at.selectbox if s.label == "Sort by").options
    user = list_users(engine, scope_for(engine, "billing-user"), FilterSpec(relative="7d")).rows[0]
    at = open_page("pages/users.py", "billing", {"relative": "7d", "user": user["user_id"]})
    assert not at.exception, at.exception
    assert "total_cost_usd" in at.dataframe[0].value.columns
    assert "Their traces" not in _links(at) and "Their sessions" in _links(at)
    assert "Export their spans" in _links(at)  # billing may export (no text fields)


def test_sessions_table_and_a_session_as_a_conversation(app_env):
    engine, _ = app_env
    scope = scope_for(engine, "admin-user")
    sessions = list_sessions(engine, scope, FilterSpec(relative="7d"), limit=50)
    at = open_page("pages/sessions.py", params={"relative": "7d"})
    assert not at.exception, at.exception
    assert list(at.dataframe[0].value["session_id"]) == [r["session_id"] for r in sessions.rows]
    session_id = sessions.rows[0]["session_id"]
    at = open_page("pages/sessions.py", params={"relative": "7d", "session": session_id})
    assert not at.exception, at.exception
    detail = get_session(engine, scope, session_id)
    messages = at.chat_message
    assert len(messages) == 2 * len(detail.turns) > 0
    assert messages[0].text[0].value == (detail.turns[0]["input_text"] or "(no input text)")
    assert messages[1].text[0].value == (detail.turns[0]["output_text"] or "(no output text)")
    assert "Its traces" in _links(at)


def test_billing_reads_a_session_without_its_text(app_env):
    engine, _ = app_env
    scope = scope_for(engine, "billing-user")
    session_id = list_sessions(engine, scope, FilterSpec(relative="7d"), limit=1).rows[0][
        "session_id"
    ]
    at = open_page("pages/sessions.py", "billing", {"relative": "7d", "session": session_id})
    assert not at.exception, at.exception
    assert len(at.chat_message) == 0
    assert any("does not show prompt" in i.value for i in at.info)
    assert any(m.label == "Cost" for m in at.metric)
    viewer = open_page("pages/sessions.py", "viewer", {"relative": "7d", "session": session_id})
    assert not viewer.exception and len(viewer.chat_message) > 0
    assert not any(m.label == "Cost" for m in viewer.metric)
