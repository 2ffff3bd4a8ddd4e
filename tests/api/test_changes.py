"""GET /changes: the What changed figures over HTTP, bounded, scoped and role-checked."""

from __future__ import annotations

import pytest

from tests.api.conftest import auth

# the demo's last day (tests.helpers.END) and, by default, the day before it as the baseline
DAY = "start=2026-11-19T12:00:00Z&end=2026-11-20T12:00:00Z"


def _get(api, query: str, who: str = "developer"):
    return api["client"].get(f"/changes?{query}", headers=auth(api, who))


def test_parts_add_up_to_the_change_and_the_rest_folds(api):
    got = _get(api, f"series=total_cost.sum&dimension=model&{DAY}&top=2")
    assert got.status_code == 200, got.text
    data = got.json()["data"]
    parts = data["contributions"]
    assert data["method"] == "difference" and data["groups"] > 2
    assert len(parts) == 3 and parts[-1]["value"] == "(other)"
    assert parts[-1]["groups"] == data["groups"] - 2
    assert sum(p["change"] for p in parts) == pytest.approx(data["change"], abs=1e-9)
    assert data["change"] == pytest.approx(data["after"] - data["before"])


def test_a_ratio_splits_into_mix_and_rate_over_the_baseline_asked(api):
    query = (
        "series=error_rate&dimension=project&start=2026-11-19T12:00:00Z"
        "&end=2026-11-20T12:00:00Z&before_start=2026-11-18T12:00:00Z"
        "&before_end=2026-11-19T12:00:00Z"
    )
    data = _get(api, query).json()["data"]
    assert data["series"] == "error_rate.avg" and data["method"] == "shift-share"
    assert data["before_start"].startswith("2026-11-18T12:00:00")
    for p in data["contributions"]:
        assert p["change"] == pytest.approx(p["mix"] + p["rate"])
    assert sum(p["change"] for p in data["contributions"]) == pytest.approx(data["change"])


def test_the_same_figures_as_the_metrics_endpoint(api):
    query = f"{DAY}&bucket=none&series=duration_ms.avg"
    whole = api["client"].get(f"/metrics?{query}", headers=auth(api)).json()["data"]["rows"][0]
    data = _get(api, f"series=duration_ms.avg&dimension=environment&{DAY}").json()["data"]
    assert data["after"] == pytest.approx(whole["duration_ms.avg"], rel=1e-9)


@pytest.mark.parametrize(
    ("query", "status", "says"),
    [
        ("series=duration_ms.p95&dimension=model", 400, "cannot be split"),
        ("series=unique_users&dimension=model", 400, "distinct"),
        ("series=request_count&dimension=colour", 400, "choose from"),
        ("series=request_count&dimension=model&before_start=2026-11-18T00:00:00Z", 400, "both"),
        ("series=request_count&dimension=model&before_start=x&before_end=y", 400, "ISO"),
        ("series=request_count&dimension=model&colour=red", 400, "Unknown query parameter"),
        ("series=request_count&dimension=model&top=0", 422, ""),
        ("series=request_count&dimension=model&relative=all", 400, "time range"),
    ],
)
def test_bad_input_gets_a_message_saying_what_to_fix(api, query, status, says):
    got = _get(api, query)
    assert got.status_code == status, got.text
    assert says in got.json()["error"]["message"]


@pytest.mark.parametrize(("role", "cost"), [("viewer", 403), ("billing", 200), ("admin", 200)])
def test_viewers_get_no_costs(api, role, cost):
    assert _get(api, f"series=total_cost.sum&dimension=model&{DAY}", role).status_code == cost
    assert _get(api, f"series=error_rate&dimension=model&{DAY}", role).status_code == 200


def test_each_org_sees_its_own_figures(api):
    """globex (a demo tenant too) gets its own requests, never acme's."""
    query = f"series=request_count&dimension=model&{DAY}"
    ours, theirs = (_get(api, query, who).json()["data"] for who in ("developer", "globex"))
    for who, data in (("developer", ours), ("globex", theirs)):
        url = f"/metrics?{DAY}&bucket=none&series=request_count.count"
        whole = api["client"].get(url, headers=auth(api, who)).json()["data"]["rows"][0]
        assert data["after"] == whole["request_count.count"], who
    assert ours["after"] != theirs["after"]


def test_listed_in_the_openapi_document(api):
    doc = api["client"].get("/openapi.json").json()
    params = {p["name"] for p in doc["paths"]["/changes"]["get"]["parameters"]}
    assert {"series", "dimension", "top", "before_start", "before_end", "models"} <= params


def test_tz_gives_each_period_bound_on_that_clock_too(api):
    from datetime import datetime
    from zoneinfo import ZoneInfo

    data = _get(api, f"series=total_cost.sum&dimension=model&{DAY}&tz=Asia/Kathmandu").json()
    data = data["data"]
    for name in ("before_start", "before_end", "after_start", "after_end"):
        utc = datetime.fromisoformat(data[name].replace("Z", "+00:00"))
        local = datetime.fromisoformat(data[f"{name}_local"])
        assert (
            local == utc
            and local.utcoffset() == utc.astimezone(ZoneInfo("Asia/Kathmandu")).utcoffset()
        )
    assert data["after_start_local"].startswith("2026-11-19T17:45:00")
    bad = _get(api, f"series=total_cost.sum&dimension=model&{DAY}&tz=Mars/Base")
    assert bad.status_code == 400 and "tz" in bad.json()["error"]["message"]
