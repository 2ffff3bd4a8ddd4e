"""Time budgets: a statement past the budget is stopped in the database and surfaces as
`QueryTooSlow`; nothing of the budget outlives it on a pooled connection."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import text

from observatory_core.base.errors import QueryTooSlow
from observatory_core.storage.budget import time_budget
from tests.helpers import SLOW_SQL

SLOW = SLOW_SQL
QUICK = {
    "postgresql": "SELECT count(*) FROM generate_series(1, 200000)",
    "sqlite": "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 200000) "
    "SELECT count(*) FROM c",
}


@pytest.mark.parametrize("autocommit", [False, True])
def test_a_statement_past_its_budget_is_stopped(engine, autocommit):
    name = engine.dialect.name
    options = {"isolation_level": "AUTOCOMMIT"} if autocommit else {}
    started = time.monotonic()
    with (
        pytest.raises(QueryTooSlow, match="time budget of 0.5 s.*Narrow it"),
        time_budget(0.5),
        engine.connect().execution_options(**options) as conn,
    ):
        assert conn.execute(text("SELECT 1")).scalar() == 1
        conn.execute(text(SLOW[name]))
    # stopped by the database, not after the statement's natural 20 s
    assert time.monotonic() - started < 10
    # the pooled connections keep no timeout: a longer statement outside a budget runs
    for _ in range(3):
        with engine.connect() as conn:
            if name == "postgresql":
                assert conn.execute(text("SHOW statement_timeout")).scalar() == "0"
            assert conn.execute(text(QUICK[name])).scalar() == 200000


def test_statements_inside_a_budget_share_what_is_left(engine):
    with time_budget(5), engine.connect() as conn:
        for _ in range(3):
            assert conn.execute(text(QUICK[engine.dialect.name])).scalar() == 200000
    if engine.dialect.name == "postgresql":
        with time_budget(5), engine.connect() as conn:
            conn.execute(text("SELECT 1"))
            ms = int(conn.execute(text("SHOW statement_timeout")).scalar().removesuffix("ms") or 0)
            assert 0 < ms <= 5000


def test_a_spent_budget_refuses_the_next_statement(engine):
    with pytest.raises(QueryTooSlow), time_budget(0.01), engine.connect() as conn:
        time.sleep(0.05)
        conn.execute(text("SELECT 1"))


def test_a_budgeted_engine_limits_each_of_its_statements(engine):
    from observatory_core.storage.budget import budgeted

    pages = budgeted(engine, 0.5)
    with pytest.raises(QueryTooSlow, match="0.5 s"), pages.connect() as conn:
        conn.execute(text(SLOW[engine.dialect.name]))
    with pages.connect() as conn:  # quick statements pass, the plain engine is unlimited
        assert conn.execute(text(QUICK[engine.dialect.name])).scalar() == 200000
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            assert conn.execute(text("SHOW statement_timeout")).scalar() == "0"
