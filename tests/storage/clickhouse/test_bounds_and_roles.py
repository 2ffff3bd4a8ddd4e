"""What a read may count, show and wait for: twins set aside count in no total, a role sees only
its fields (named ones refused, defaults left out), and a read waits for the in-process engine
no longer than its time budget, nor leaves the next statement anything when stopped."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import literal_column, select, text

from observatory_core.accounts.permissions import Role
from observatory_core.accounts.scope import Scope
from observatory_core.base.errors import PermissionDenied, QueryTooSlow
from observatory_core.metrics.series_reads import frame_of_statement
from observatory_core.storage import budget
from observatory_core.storage.clickhouse.reads import Window, list_spans, span_totals
from observatory_core.storage.clickhouse.sql import read_columns
from observatory_core.storage.clickhouse.writes import write_spans
from tests.storage.clickhouse.conftest import END, demo_rows

WINDOW = Window(END - timedelta(days=14), END)
PLAIN = [dict(r, org_id=70) for r in demo_rows(40, seed=31)]
TWINS = [
    dict(r, org_id=70, span_id=r["span_id"][:-1] + "t", duplicate_of=r["span_id"]) for r in PLAIN
]


@pytest.fixture(scope="module")
def store(chdb_store):
    write_spans(chdb_store, PLAIN + TWINS)
    return chdb_store


def test_totals_leave_out_twins_as_every_other_figure_does(store):
    counted = [r for r in PLAIN if WINDOW.start <= r["start_time"] < WINDOW.end]
    totals = span_totals(store, Scope(70, Role.ADMIN), WINDOW)
    assert totals.spans == len(counted)
    assert totals.tokens == sum(r["total_tokens"] or 0 for r in counted)


def test_a_viewer_gets_no_cost_by_default_and_billing_no_text_by_name(store):
    page = list_spans(store, Scope(70, Role.VIEWER), WINDOW, limit=5)
    assert page.rows and "total_cost_usd" not in page.rows[0]
    assert span_totals(store, Scope(70, Role.VIEWER), WINDOW).cost_usd is None
    assert span_totals(store, Scope(70, Role.ADMIN), WINDOW).cost_usd is not None
    with pytest.raises(PermissionDenied):
        list_spans(store, Scope(70, Role.BILLING), WINDOW, columns=("input_text",))


def test_a_read_waiting_on_the_chdb_handle_stays_within_its_budget(store):
    busy = threading.Thread(
        target=store.client.query,  # a statement without a budget (a write) holds the engine
        args=("SELECT sum(sleepEachRow(0.25)) FROM numbers(8) SETTINGS max_block_size = 1",),
    )
    busy.start()
    time.sleep(0.3)
    started = time.monotonic()
    try:
        with budget.time_budget(1), pytest.raises(QueryTooSlow):
            span_totals(store, Scope(70, Role.ADMIN), WINDOW)
    finally:
        waited = time.monotonic() - started
        busy.join()
    assert waited < 2.5, waited


# about 3 s of engine time in blocks of one row: stopped by max_execution_time = 1 (the least a
# budget becomes) after the engine has begun its output
SLOW = select(literal_column("sum(s)").label("n")).select_from(
    text("(SELECT sleepEachRow(0.01) AS s, number FROM numbers(300))")
)


@pytest.mark.parametrize(
    "read",
    [
        pytest.param(lambda store: read_columns(store.engine, SLOW), id="read_columns"),
        pytest.param(lambda store: frame_of_statement(store.engine, SLOW), id="plain"),
    ],
)
def test_a_read_stopped_at_its_budget_leaves_the_next_statement_its_own_answer(store, read):
    """A read stopped at its time bound leaves nothing of its answer in the engine: the next
    statement on the store (a writer's, another page's) gets its own. A read of chDB's Arrow
    output stopped so left its partial bytes to the next statement, which is why none is made."""
    with budget.time_budget(0.5), pytest.raises(QueryTooSlow):
        read(store)
    assert store.client.query("SELECT 42 AS n").result_rows == [(42,)]
    assert read_columns(store.engine, select(literal_column("7").label("n"))) == [[7]]
