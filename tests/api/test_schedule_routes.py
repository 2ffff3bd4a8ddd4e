"""/export/schedules: create, list, read, pause and resume, delete; roles and orgs; a run is
an ordinary job in /export/jobs naming its schedule."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from observatory_core.exports.schedules import run_due
from tests.api.conftest import auth


def test_schedule_lifecycle_roles_and_a_run(api):
    client, engine = api["client"], api["engine"]
    body = {
        "cadence": "daily",
        "tz": "America/New_York",
        "name": "daily chats",
        "filters": {"operations": ["chat"], "relative": "7d"},
        "format": "csv",
        "compression": "none",
        "webhook_url": "https://hooks.example.com/T000/B000/secret",
    }
    made = client.post("/export/schedules", json=body, headers=auth(api))
    assert made.status_code == 201, made.text
    schedule = made.json()["data"]
    assert schedule["owner"].startswith("key:") and schedule["may_manage"]
    assert (schedule["cadence"], schedule["time_zone"], schedule["enabled"]) == (
        "daily",
        "America/New_York",
        True,
    )
    assert schedule["filters"]["operations"] == ["chat"] and schedule["filters"]["relative"] is None
    local = datetime.fromisoformat(schedule["next_run_at"]).astimezone(ZoneInfo("America/New_York"))
    assert (local.hour, local.minute) == (0, 0)
    sid = schedule["id"]

    refused = [
        ("viewer", {}, 403, "exports:create"),
        ("billing", {"fields": ["start_time", "input_text"]}, 403, "input_text"),
        ("developer", {"tz": "Mars/Olympus"}, 400, "tz: Unknown time zone"),
        ("developer", {"cadence": "hourly"}, 422, "cadence"),
        # a NUL, which PostgreSQL refuses in text (a 500 found by the schema fuzzing)
        ("developer", {"name": "\x00"}, 400, "control characters; use plain text"),
    ]
    for who, change, status, message in refused:
        answer = client.post("/export/schedules", json={**body, **change}, headers=auth(api, who))
        assert answer.status_code == status and message in answer.text, (who, answer.text)

    listed = client.get("/export/schedules", headers=auth(api, "viewer")).json()["data"]
    assert [(s["id"], s["may_manage"], s["webhook_url"], s["has_webhook"]) for s in listed] == [
        (sid, False, None, True)  # the hook's secret stays with its owner and admins
    ]
    assert client.get(f"/export/schedules/{sid}", headers=auth(api, "globex")).status_code == 404
    assert client.get("/export/schedules/999999", headers=auth(api)).status_code == 404

    pause = {"enabled": False}
    assert (
        client.patch(
            f"/export/schedules/{sid}", json=pause, headers=auth(api, "viewer")
        ).status_code
        == 403
    )
    paused = client.patch(f"/export/schedules/{sid}", json=pause, headers=auth(api, "admin"))
    assert paused.status_code == 200 and paused.json()["data"]["enabled"] is False
    resumed = client.patch(f"/export/schedules/{sid}", json={"enabled": True}, headers=auth(api))
    assert resumed.json()["data"]["enabled"] is True

    due = datetime.fromisoformat(resumed.json()["data"]["next_run_at"])
    (job_id,) = run_due(engine, due + timedelta(seconds=1))
    jobs = client.get("/export/jobs", headers=auth(api)).json()["data"]
    assert [(j["id"], j["schedule_id"], j["created_by"]) for j in jobs] == [
        (job_id, sid, schedule["owner"])
    ]
    assert (
        client.get(f"/export/schedules/{sid}", headers=auth(api)).json()["data"]["last_job_id"]
        == job_id
    )

    assert client.delete(f"/export/schedules/{sid}", headers=auth(api, "viewer")).status_code == 403
    gone = client.delete(f"/export/schedules/{sid}", headers=auth(api))
    assert gone.status_code == 200 and gone.json()["data"]["id"] == sid
    assert client.get(f"/export/schedules/{sid}", headers=auth(api)).status_code == 404
    assert (
        client.get(f"/export/jobs/{job_id}", headers=auth(api)).json()["data"]["schedule_id"]
        is None
    )
