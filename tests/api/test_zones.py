"""`tz=` on the API: buckets of the zone's clock (the same figures as the core's), local times
with their offset next to UTC ones, and a 400 that says what to send for a bad name."""

from __future__ import annotations

from datetime import datetime, timedelta
from urllib.parse import quote

from observatory_core.filters.spec import FilterSpec
from observatory_core.metrics.engine import run_metrics
from observatory_core.metrics.query import MetricQuery
from tests.api.conftest import auth, scope_of
from tests.api.test_routes import normal
from tests.helpers import END


def _range() -> tuple[datetime, datetime]:
    return END - timedelta(days=2, hours=3), END


def test_metrics_buckets_follow_tz_and_match_the_core(api):
    start, end = _range()
    window = f"&start={quote(start.isoformat())}&end={quote(end.isoformat())}"
    for tz in ("Asia/Kolkata", "America/New_York"):
        got = api["client"].get(
            f"/metrics?series=request_count.count&bucket=1day&tz={tz}{window}", headers=auth(api)
        )
        assert got.status_code == 200, got.text
        data = got.json()["data"]
        assert data["zone"] == tz
        core = run_metrics(
            api["engine"],
            scope_of(api),
            MetricQuery(
                series=("request_count.count",),
                filters=FilterSpec(relative=None, start=start, end=end),
                bucket="1day",
                zone=tz,
            ),
        ).frame
        rows = data["rows"]
        assert [r["bucket"] for r in rows] == normal(core["bucket"].to_list())
        assert [r["request_count.count"] for r in rows] == core["request_count.count"].to_list()
        # each bucket starts at local midnight, said with its offset
        assert all(r["bucket_local"][11:19] == "00:00:00" for r in rows)
        offset = "+05:30" if tz == "Asia/Kolkata" else "-05:00"
        assert all(r["bucket_local"].endswith(offset) for r in rows)


def test_metrics_query_takes_tz_in_the_body(api):
    start, end = _range()
    body = {
        "series": ["request_count.count"],
        "filters": {"start": start.isoformat(), "end": end.isoformat(), "relative": None},
        "bucket": "1week",
        "tz": "Asia/Kathmandu",
    }
    got = api["client"].post("/metrics/query", json=body, headers=auth(api))
    assert got.status_code == 200, got.text
    rows = got.json()["data"]["rows"]
    assert rows and all(r["bucket_local"].endswith("+05:45") for r in rows)
    assert all(datetime.fromisoformat(r["bucket_local"]).weekday() == 0 for r in rows)


def test_traces_carry_local_times(api):
    got = api["client"].get("/traces?relative=all&limit=5&tz=Asia/Kolkata", headers=auth(api))
    assert got.status_code == 200, got.text
    for row in got.json()["data"]:
        utc = datetime.fromisoformat(row["start_time"].replace("Z", "+00:00"))
        local = datetime.fromisoformat(row["start_time_local"])
        assert local == utc and local.utcoffset() == timedelta(hours=5, minutes=30)


def test_a_bad_tz_is_a_400_saying_what_to_send(api):
    for url in (
        "/metrics?series=request_count.count&tz=Mars/Olympus",
        "/traces?tz=Mars/Olympus",
    ):
        got = api["client"].get(url, headers=auth(api))
        assert got.status_code == 400, got.text
        message = got.json()["error"]["message"]
        assert "Mars/Olympus" in message and "IANA" in message and "America/New_York" in message
    body = {"series": ["request_count.count"], "tz": "Nowhere"}
    got = api["client"].post("/metrics/query", json=body, headers=auth(api))
    assert got.status_code == 400 and "IANA" in got.json()["error"]["message"]


def test_summary_takes_a_calendar_period_of_the_zone(api):
    got = api["client"].get("/metrics/summary?period=yesterday&tz=Asia/Kolkata", headers=auth(api))
    assert got.status_code == 200, got.text
    data = got.json()["data"]
    start = datetime.fromisoformat(data["start"].replace("Z", "+00:00"))
    end = datetime.fromisoformat(data["end"].replace("Z", "+00:00"))
    assert end - start == timedelta(days=1)
    assert (start.hour, start.minute) == (18, 30)  # Kolkata's midnight in UTC
    bad = api["client"].get("/metrics/summary?tz=Nowhere/Land", headers=auth(api))
    assert bad.status_code == 400 and "IANA" in bad.json()["error"]["message"]


def test_trace_days_follow_tz_and_the_lists_filters(api):
    """GET /traces/days: the core's days (`list_days`) for the same filters, each day's start
    and end its local midnights with their offset; a day's start/end sent back to /traces
    list that day's rows."""
    from observatory_core.base.zones import Zone
    from observatory_core.traces.days import list_days

    client, zone = api["client"], Zone("Asia/Kathmandu")
    got = client.get(
        "/traces/days?relative=all&mode=traces&operations=chat&tz=Asia/Kathmandu",
        headers=auth(api),
    )
    assert got.status_code == 200, got.text
    body = got.json()
    core = list_days(
        api["engine"],
        scope_of(api),
        FilterSpec(relative=None, operations=("chat",)),
        mode="traces",
        zone=zone,
    )
    assert body["zone"] == "Asia/Kathmandu" and body["total"] == core.total > 0
    assert [(d["day"], d["rows"], d["error_count"]) for d in body["data"]] == [
        (d["day"].isoformat(), d["rows"], d["error_count"]) for d in core.days
    ]
    day = body["data"][0]
    assert day["start_local"] == f"{day['day']}T00:00:00+05:45"
    window = f"start={quote(day['start'])}&end={quote(day['end'])}"
    listed = client.get(f"/traces?{window}&count=true&limit=1", headers=auth(api)).json()
    spans_days = client.get(f"/traces/days?{window}&tz=Asia/Kathmandu", headers=auth(api))
    assert [d["rows"] for d in spans_days.json()["data"]] == [listed["total"]]
    viewer = client.get("/traces/days?relative=all", headers=auth(api, "viewer")).json()
    assert viewer["data"] and all("total_cost_usd" not in d for d in viewer["data"])
    assert "start_local" not in viewer["data"][0]  # no tz: the answer's times are UTC only
    bad = client.get("/traces/days?tz=Mars/Olympus", headers=auth(api))
    assert bad.status_code == 400 and "IANA" in bad.json()["error"]["message"]
    bad = client.get("/traces/days?nonsense=1", headers=auth(api))
    assert bad.status_code == 400


def test_users_and_sessions_carry_local_times(api):
    """tz= on /users, /sessions and /sessions/{id}: each time also on Kathmandu's clock."""
    client, ktm = api["client"], timedelta(hours=5, minutes=45)

    def same_instant(row: dict, name: str) -> None:
        utc = datetime.fromisoformat(row[name].replace("Z", "+00:00"))
        local = datetime.fromisoformat(row[f"{name}_local"])
        assert local == utc and local.utcoffset() == ktm

    for path in ("/users", "/sessions"):
        rows = client.get(f"{path}?relative=all&tz=Asia/Kathmandu", headers=auth(api)).json()
        assert rows["data"]
        for row in rows["data"]:
            same_instant(row, "first_seen")
            same_instant(row, "last_seen")
    plain = client.get("/users?relative=all&limit=1", headers=auth(api)).json()["data"][0]
    assert "first_seen_local" not in plain  # no tz: the answer keeps its shape
    session = client.get("/sessions?relative=all&limit=1", headers=auth(api)).json()["data"][0]
    path = f"/sessions/{quote(session['session_id'], safe='')}?tz=Asia/Kathmandu"
    data = client.get(path, headers=auth(api)).json()["data"]
    same_instant(data, "first_seen")
    for turn in data["turns"]:
        same_instant(turn, "first_start")
    bad = client.get("/users?tz=Nowhere/Land", headers=auth(api))
    assert bad.status_code == 400 and "IANA" in bad.json()["error"]["message"]
