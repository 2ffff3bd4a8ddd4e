"""Issue 25's limits hold on the span store too: a grouping past the cap is folded into
"(other)" by the engine (the parts add up to the whole), an answer past the cell cap is refused
with how to narrow it, and a read past its budget is stopped with a 503 (or, past its memory
bound, answered 400 with a sentence)."""

from __future__ import annotations

import time
from datetime import timedelta

from sqlalchemy import text

from observatory_core.api import metrics as metrics_routes
from observatory_core.api.common import cache
from observatory_core.base.settings import get_settings
from observatory_core.metrics.folding import OTHER
from tests.api.span_store.conftest import FORTNIGHT, SPAN_WINDOW
from tests.helpers import SLOW_SQL
from tests.metrics.reference import reference_metrics
from tests.traces.conftest import NOW


def test_a_grouping_past_the_cap_is_folded_into_other_on_the_chosen_store(
    client, routed, monkeypatch
):
    client, _, on_store = client
    monkeypatch.setenv("OBSERVATORY_METRICS_MAX_GROUPS", "3")
    get_settings.cache_clear()
    got = client.get(
        f"/metrics?bucket=none&tz=UTC&{SPAN_WINDOW}&series=request_count.count"
        "&series=duration_ms.p99&group_by=model&group_by=user_id"
    )
    assert got.status_code == 200, got.text
    data = got.json()["data"]
    series = ("request_count.count",)
    keys = ("model", "user_id")
    want = reference_metrics(routed["sql_df"], FORTNIGHT, NOW, routed["acme"], series, keys, None)
    extra = 1 if on_store else 0  # the LLM call only the span store holds, a group of its own
    rows = data["rows"]
    assert len(rows) == 4 and sum(r["model"] == OTHER for r in rows) == 1
    assert data["folded_groups"] == want.height + extra - 3
    assert sum(r["request_count.count"] for r in rows) == want["request_count.count"].sum() + extra


def test_an_answer_past_the_cell_cap_is_refused_on_the_chosen_store(client, routed, monkeypatch):
    """Daily buckets by model: a cap one cell short of the store's own groups is refused before
    the read, saying the buckets and groups it counted (the span store's model one more), and a
    cap of exactly that many cells is answered."""
    client, _, on_store = client
    series = ("request_count.count",)
    want = reference_metrics(
        routed["sql_df"], FORTNIGHT, NOW, routed["acme"], series, ("model",), None
    )
    groups = want.height + (1 if on_store else 0)  # the model only the span store has seen
    last = FORTNIGHT.end - timedelta(microseconds=1)
    days = (last.date() - FORTNIGHT.start.date()).days + 1  # UTC days the fortnight touches
    url = f"/metrics?bucket=1day&tz=UTC&{SPAN_WINDOW}&series=request_count.count&group_by=model"
    monkeypatch.setenv("OBSERVATORY_METRICS_MAX_CELLS", str(days * groups - 1))
    get_settings.cache_clear()
    got = client.get(url)
    assert got.status_code == 400, got.text
    message = got.json()["error"]["message"]
    assert f"({days} buckets x {groups}" in message and "Narrow it" in message, message
    monkeypatch.setenv("OBSERVATORY_METRICS_MAX_CELLS", str(days * groups))
    get_settings.cache_clear()
    cache._items.clear()
    assert client.get(url).status_code == 200


# a statement the engine runs for 6 s unless stopped (ClickHouse's sleep is per row, at most 3 s)
STORE_SLOW = "SELECT sum(sleepEachRow(0.2)) FROM numbers(30) SETTINGS max_block_size = 1"


def test_a_read_past_its_budget_answers_503_on_the_chosen_store(client, monkeypatch):
    """The request's budget reaches the span store's engine (max_execution_time, at least a
    second): stopped, answered 503 with Retry-After within the budget and a second (measured
    1.0-1.2 s), and the next request is answered."""
    client, _, on_store = client
    monkeypatch.setenv("OBSERVATORY_READ_BUDGET_S", "1")
    get_settings.cache_clear()
    real = metrics_routes.run_metrics

    def slow(engine, *_args, **_kwargs):
        with engine.connect() as conn:
            conn.execute(text(STORE_SLOW if on_store else SLOW_SQL["sqlite"]))

    monkeypatch.setattr(metrics_routes, "run_metrics", slow)
    started = time.monotonic()
    got = client.get(f"/metrics?series=request_count.count&{SPAN_WINDOW}")
    elapsed = time.monotonic() - started
    assert got.status_code == 503, got.text
    assert got.json()["error"]["code"] == "timeout" and got.headers["Retry-After"]
    assert elapsed < 1 + 1, f"answered after {elapsed:.1f} s"
    monkeypatch.setattr(metrics_routes, "run_metrics", real)
    monkeypatch.delenv("OBSERVATORY_READ_BUDGET_S")
    get_settings.cache_clear()
    assert client.get(f"/metrics?series=request_count.count&{SPAN_WINDOW}").status_code == 200


def test_a_read_past_its_memory_bound_is_a_sentence_not_a_500(client, monkeypatch):
    """A read the span store stops at its memory bound (at 10M spans a 30-day page's
    newest-copy pick, before schema version 7, passed the 2 GiB of one read) answers 400 with what to narrow, in spans
    and traces mode; the next request is answered. (A spans-mode page by start time is one
    top-n statement since schema version 8: on this small store it allocates too little for
    the engine's memory tracking to stop it, and is answered even at this bound.)"""
    from observatory_core.storage.clickhouse import reads

    client, _, on_store = client
    bound = reads.READ_MEMORY
    monkeypatch.setattr(reads, "READ_MEMORY", 64 * 1024)  # far below any read's needs
    for route in (f"/traces?{SPAN_WINDOW}&sort=duration_ms", f"/traces?{SPAN_WINDOW}&mode=traces"):
        got = client.get(route)
        if not on_store:  # SQLite has no per-read memory bound: answered as ever
            assert got.status_code == 200, got.text[:300]
            continue
        assert got.status_code == 400, (route, got.status_code, got.text[:300])
        error = got.json()["error"]
        assert error["code"] == "too_large" and "shorter time range" in error["message"]
        assert "Code: 241" not in got.text and "SELECT" not in got.text
    monkeypatch.setattr(reads, "READ_MEMORY", bound)
    assert client.get(f"/traces?{SPAN_WINDOW}").status_code == 200
