"""/dashboards over HTTP: create, list, read, replace, delete; an export posts back as it is;
bad definitions are 400s naming the field; writes need a developer or admin key; other orgs'
dashboards are not found."""

from __future__ import annotations

import json

from observatory_core.dashboards.model import from_dict, to_dict
from observatory_core.dashboards.store import get_dashboard
from observatory_core.demo.starter_dashboards import STARTER_DASHBOARDS
from tests.api.conftest import auth, scope_of

COST, LATENCY = STARTER_DASHBOARDS


def test_crud_and_the_export_round_trip(api):
    client = api["client"]
    made = client.post("/dashboards", json=COST, headers=auth(api))
    assert made.status_code == 201, made.text
    body = made.json()["data"]
    board_id = body["id"]
    assert body["dashboard"] == to_dict(from_dict(COST))  # as sent, in its normal form
    assert get_dashboard(api["engine"], scope_of(api), board_id)["dashboard"] == from_dict(COST)
    listed = client.get("/dashboards", headers=auth(api, "viewer")).json()["data"]
    assert [(d["id"], d["name"], d["charts"]) for d in listed] == [(board_id, COST["name"], 6)]
    # the export (GET) posts back under a new name: the same dashboard
    exported = client.get(f"/dashboards/{board_id}", headers=auth(api, "billing")).json()
    text = json.dumps(exported["data"]["dashboard"])
    again = client.post("/dashboards", json={**json.loads(text), "name": "Copy"}, headers=auth(api))
    assert again.status_code == 201, again.text
    assert {**again.json()["data"]["dashboard"], "name": COST["name"]} == exported["data"][
        "dashboard"
    ]
    # the same name twice: 409
    twice = client.post("/dashboards", json=COST, headers=auth(api, "admin"))
    assert twice.status_code == 409 and "already has" in twice.json()["error"]["message"]
    # replace, then delete (the answer holds what was deleted)
    put = client.put(f"/dashboards/{board_id}", json=LATENCY, headers=auth(api))
    assert put.status_code == 200 and put.json()["data"]["name"] == LATENCY["name"]
    gone = client.delete(f"/dashboards/{board_id}", headers=auth(api))
    assert gone.status_code == 200 and gone.json()["data"]["dashboard"]["name"] == LATENCY["name"]
    assert client.get(f"/dashboards/{board_id}", headers=auth(api)).status_code == 404


def test_roles_other_orgs_and_bad_definitions(api):
    client = api["client"]
    board_id = client.post("/dashboards", json=COST, headers=auth(api)).json()["data"]["id"]
    for who in ("viewer", "billing"):
        assert client.get(f"/dashboards/{board_id}", headers=auth(api, who)).status_code == 200
        for method, path in (
            ("post", "/dashboards"),
            ("put", f"/dashboards/{board_id}"),
            ("delete", f"/dashboards/{board_id}"),
        ):
            kw = {} if method == "delete" else {"json": LATENCY}
            answer = getattr(client, method)(path, headers=auth(api, who), **kw)
            assert answer.status_code == 403, (who, method)
            assert "dashboards:manage" in answer.json()["error"]["message"]
    # another org's key: not found, never forbidden
    assert client.get("/dashboards", headers=auth(api, "globex")).json()["data"] == []
    for method in ("get", "delete"):
        answer = getattr(client, method)(f"/dashboards/{board_id}", headers=auth(api, "globex"))
        assert answer.status_code == 404
    # a bad chart: 400 with the field's path
    bad = {**COST, "name": "Bad", "charts": [{"title": "x", "series": "total_cost.p42"}]}
    answer = client.post("/dashboards", json=bad, headers=auth(api))
    assert answer.status_code == 400
    assert answer.json()["error"]["message"].startswith("charts[0].series: Unknown aggregation")
    unknown = client.post("/dashboards", json={**COST, "owner": "me"}, headers=auth(api))
    assert unknown.status_code == 422 and "owner" in unknown.json()["error"]["message"]
    assert client.get("/dashboards/0", headers=auth(api)).status_code == 422
    assert client.get("/dashboards", headers=auth(api, "ingest-only")).status_code == 401
