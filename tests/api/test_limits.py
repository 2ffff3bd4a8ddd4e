"""No request can take the server down: heavy grouped reads are capped, slow ones stopped at
their budget (503 with Retry-After), and one key cannot run many heavy reads at once."""

from __future__ import annotations

import threading
import time

import polars as pl
from sqlalchemy import text

from observatory_core.api import metrics as metrics_routes
from observatory_core.base.settings import get_settings
from observatory_core.metrics.folding import OTHER
from tests.api.conftest import auth
from tests.helpers import SLOW_SQL, all_spans
from tests.reference import reference_llm_calls

SLOW = SLOW_SQL
# the demo's last week, ending mid-hour (its last bucket is partial)
DEMO_WEEK = "start=2026-11-13T12:00:00Z&end=2026-11-20T11:30:00Z"


def test_a_grouping_past_the_cap_is_folded_into_other(api, monkeypatch):
    monkeypatch.setenv("OBSERVATORY_METRICS_MAX_GROUPS", "5")
    get_settings.cache_clear()
    url = (
        "/metrics?series=duration_ms.p99&series=request_count.count&bucket=1hour"
        "&group_by=user_id&group_by=model&relative=all"
    )
    got = api["client"].get(url, headers=auth(api))
    assert got.status_code == 200, got.text
    data = got.json()["data"]
    rows = pl.DataFrame(data["rows"])
    groups = rows.select("user_id", "model").unique()
    assert groups.height == 6 and OTHER in rows["user_id"].to_list()
    spans = all_spans(api["engine"])
    # the series count LLM calls (issue 24): their groups and their total
    spans = spans.filter(
        pl.col("id").is_in(list(reference_llm_calls(spans))) & (pl.col("org_id") == api["acme"])
    )
    assert data["folded_groups"] == spans.select("user_id", "model").unique().height - 5
    assert rows["request_count.count"].sum() == spans.height  # the parts add up to the whole


def test_too_many_values_answer_400_with_how_to_narrow(api, monkeypatch):
    monkeypatch.setenv("OBSERVATORY_METRICS_MAX_CELLS", "1000")
    get_settings.cache_clear()
    url = "/metrics?series=request_count.count&bucket=1min&group_by=model&relative=24h"
    got = api["client"].get(url, headers=auth(api))
    assert got.status_code == 400
    error = got.json()["error"]
    assert error["code"] == "bad_request" and "Narrow it" in error["message"]


def _slow_metrics(engine):
    def run(*_args, **_kwargs):
        with engine.connect() as conn:
            conn.execute(text(SLOW[engine.dialect.name]))

    return run


def test_a_query_past_its_budget_answers_503_within_the_budget(api, monkeypatch):
    monkeypatch.setenv("OBSERVATORY_READ_BUDGET_S", "1")
    get_settings.cache_clear()
    real_run = metrics_routes.run_metrics
    monkeypatch.setattr(metrics_routes, "run_metrics", _slow_metrics(api["engine"]))
    started = time.monotonic()
    got = api["client"].get("/metrics?series=request_count.count", headers=auth(api))
    elapsed = time.monotonic() - started
    assert got.status_code == 503, got.text
    assert got.json()["error"]["code"] == "timeout"
    assert "time budget of 1 s" in got.json()["error"]["message"]
    assert got.headers["Retry-After"]
    # cut at the budget, not waited out: the query alone takes 20 s and more (`SLOW_SQL`); the
    # bound is loose, as a loaded machine answers late (2.3 s once at load 24)
    assert elapsed < 10, f"answered after {elapsed:.1f} s"
    # the connection went back to the pool clean: the next request is answered
    monkeypatch.setattr(metrics_routes, "run_metrics", real_run)
    monkeypatch.delenv("OBSERVATORY_READ_BUDGET_S")
    get_settings.cache_clear()
    ok = api["client"].get("/metrics?series=request_count.count&bucket=none", headers=auth(api))
    assert ok.status_code == 200


def test_one_key_runs_at_most_two_heavy_reads_at_once(api, monkeypatch):
    release = threading.Event()
    started = threading.Semaphore(0)
    real = metrics_routes._metrics_data

    def blocked(*args, **kwargs):
        started.release()
        release.wait(10)
        return real(*args, **kwargs)

    monkeypatch.setattr(metrics_routes, "_metrics_data", blocked)
    answers: list = []

    def call(who: str) -> None:
        answers.append(
            (who, api["client"].get("/metrics?series=error_count.count", headers=auth(api, who)))
        )

    running = [threading.Thread(target=call, args=("developer",)) for _ in range(2)]
    for t in running:
        t.start()
    for _ in running:
        assert started.acquire(timeout=10)
    third = api["client"].get("/metrics?series=request_count.count", headers=auth(api))
    assert third.status_code == 429 and third.json()["error"]["code"] == "rate_limited"
    assert "2 trace or metrics queries running" in third.json()["error"]["message"]
    assert third.headers["Retry-After"] == "1"
    # another key is not held up by this one
    monkeypatch.setattr(metrics_routes, "_metrics_data", real)
    other = api["client"].get("/metrics?series=request_count.count", headers=auth(api, "admin"))
    assert other.status_code == 200
    release.set()
    for t in running:
        t.join(10)
    assert [a.status_code for _, a in answers] == [200, 200]


def test_a_raw_grouping_past_its_span_cap_answers_400_saying_to_declare_it(api, monkeypatch):
    """The cap on spans grouped from raw spans, through the API (settings), and the answers
    that stay: a grouping the rollups carry, an empty range."""
    monkeypatch.setenv("OBSERVATORY_METRICS_MAX_RAW_SPANS", "100")
    get_settings.cache_clear()
    url = f"/metrics?series=request_count.count&bucket=1hour&group_by=user_id&{DEMO_WEEK}"
    got = api["client"].get(url, headers=auth(api))
    assert got.status_code == 400, got.text
    error = got.json()["error"]
    assert error["code"] == "bad_request"
    assert "declare user_id as a dimension" in error["message"]
    # the same grouping by a dimension the rollups carry is answered
    ok = api["client"].get(url.replace("user_id", "model"), headers=auth(api))
    assert ok.status_code == 200, ok.text
    # and so is a range without spans whose last bucket is partial: no groups, no rows (it
    # answered 500 when the partial buckets were marked on the empty answer)
    empty = "/metrics?series=request_count.count&bucket=1hour&group_by=model&relative=1h"
    got = api["client"].get(empty, headers=auth(api))
    assert got.status_code == 200, got.text
    assert got.json()["data"]["rows"] == [] and got.json()["data"]["partial_buckets"]
