"""GET /users, /sessions and /sessions/{id}: answers equal to the core's, roles, other orgs,
bounds and the OpenAPI document."""

from __future__ import annotations

from urllib.parse import quote

from observatory_core.filters.spec import FilterSpec
from observatory_core.traces.sessions import list_sessions
from observatory_core.traces.users import list_users
from tests.api.conftest import auth, scope_of
from tests.api.test_routes import normal


def test_users_equal_the_core_and_page_on(api):
    client = api["client"]
    query = "relative=all&environments=production&sort=total_tokens&limit=5"
    body = client.get(f"/users?{query}", headers=auth(api)).json()
    spec = FilterSpec(relative=None, environments=("production",))
    core = list_users(api["engine"], scope_of(api), spec, sort="total_tokens", limit=5)
    assert body["data"] == normal(core.rows) and len(body["data"]) == 5
    assert body["total"] == core.total and body["next_offset"] == 5
    second = client.get(f"/users?{query}&offset=5", headers=auth(api)).json()["data"]
    assert not {r["user_id"] for r in second} & {r["user_id"] for r in body["data"]}
    tokens = [r["total_tokens"] for r in body["data"] + second]
    assert tokens == sorted(tokens, reverse=True)


def test_user_search_and_sessions_equal_the_core(api):
    client = api["client"]
    first = client.get("/users?relative=all&limit=1", headers=auth(api)).json()["data"][0]
    needle = first["user_id"][:-1].upper()
    found = client.get(f"/users?relative=all&id_contains={quote(needle)}", headers=auth(api)).json()
    assert first["user_id"] in {r["user_id"] for r in found["data"]}
    assert all(needle.lower() in r["user_id"].lower() for r in found["data"])
    body = client.get("/sessions?relative=all&sort=trace_count&limit=20", headers=auth(api)).json()
    core = list_sessions(
        api["engine"], scope_of(api), FilterSpec(relative=None), sort="trace_count", limit=20
    )
    assert body["data"] == normal(core.rows) and body["total"] == core.total > 0


def test_a_session_as_a_conversation_by_role(api):
    client = api["client"]
    row = client.get("/sessions?relative=all&limit=1", headers=auth(api)).json()["data"][0]
    path = f"/sessions/{quote(row['session_id'], safe='')}"
    full = client.get(path, headers=auth(api)).json()["data"]
    assert full["trace_count"] == len(full["turns"]) and full["users"]
    starts = [t["first_start"] for t in full["turns"]]
    assert starts == sorted(starts)
    assert any(t.get("input_text") for t in full["turns"])
    assert full["total_cost_usd"] is not None

    viewer = client.get(path, headers=auth(api, "viewer")).json()["data"]
    assert viewer["total_cost_usd"] is None
    assert all("total_cost_usd" not in t for t in viewer["turns"])
    assert [t.get("input_text") for t in viewer["turns"]] == [
        t.get("input_text") for t in full["turns"]
    ]
    billing = client.get(path, headers=auth(api, "billing")).json()["data"]
    assert billing["total_cost_usd"] == full["total_cost_usd"]
    assert all("input_text" not in t and "output_text" not in t for t in billing["turns"])


def test_viewer_gets_no_cost_and_cannot_sort_by_it(api):
    client = api["client"]
    rows = client.get("/users?relative=all", headers=auth(api, "viewer")).json()["data"]
    assert rows and all("total_cost_usd" not in r for r in rows)
    refused = client.get("/users?relative=all&sort=total_cost_usd", headers=auth(api, "viewer"))
    assert refused.status_code == 403 and "costs" in refused.json()["error"]["message"]
    refused = client.get("/sessions?relative=all&min_cost_usd=1", headers=auth(api, "viewer"))
    assert refused.status_code == 403


def test_other_orgs_users_and_sessions_never_appear(api):
    client = api["client"]
    mine = client.get("/sessions?relative=all&limit=1", headers=auth(api)).json()["data"][0]
    ours = client.get("/users?relative=all&limit=1000", headers=auth(api)).json()["data"]
    theirs = client.get("/users?relative=all&limit=1000", headers=auth(api, "globex")).json()
    # the demo names each org's end users apart, so any overlap would be a leak
    assert ours and theirs["data"]
    assert not {r["user_id"] for r in ours} & {r["user_id"] for r in theirs["data"]}
    sessions = client.get("/sessions?relative=all&limit=1000", headers=auth(api, "globex"))
    assert mine["session_id"] not in {r["session_id"] for r in sessions.json()["data"]}
    other = client.get(
        f"/sessions/{quote(mine['session_id'], safe='')}", headers=auth(api, "globex")
    )
    assert other.status_code == 404 and other.json()["error"]["code"] == "not_found"


def test_bounds_and_bad_input(api):
    client = api["client"]
    assert client.get("/users?limit=5000", headers=auth(api)).status_code == 422
    assert client.get("/sessions?offset=-1", headers=auth(api)).status_code == 422
    unknown = client.get("/users?colour=red", headers=auth(api))
    assert unknown.status_code == 400 and "colour" in unknown.json()["error"]["message"]
    assert client.get("/users").status_code == 401
    assert client.get("/users", headers=auth(api, "ingest-only")).status_code == 401


def test_openapi_documents_the_routes_with_filters(api):
    document = api["client"].get("/openapi.json").json()
    for path in ("/users", "/sessions", "/sessions/{session_id}"):
        assert path in document["paths"]
    names = {p["name"] for p in document["paths"]["/users"]["get"]["parameters"]}
    assert {"id_contains", "search", "sort", "offset", "relative", "models", "user_ids"} <= names


def test_an_id_holding_a_newline_gets_the_apis_json_answer(api):
    # found by schemathesis: the mount's pattern stopped at %0A and the host's text 404 answered
    answer = api["client"].get("/sessions/a%0Ab", headers=auth(api))
    assert answer.status_code == 404
    assert answer.headers["content-type"] == "application/json"
    assert answer.json()["error"]["code"] == "not_found"
