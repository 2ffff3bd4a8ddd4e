"""The alert evaluator's loop when the database drops its connections (PostgreSQL terminates
them; SQLite is held locked by another writer): one warning line, no traceback, and the next
round evaluates again."""

from __future__ import annotations

import logging
import sqlite3
import threading

from sqlalchemy import text

from observatory_core.alerts.evaluate import evaluate
from observatory_core.alerts.loops import _forever, beat
from observatory_core.storage.engine import get_engine
from tests.alerts.conftest import NOW, add_spans


def test_a_dropped_connection_costs_one_round_and_one_line(org, db_url, caplog):
    engine, org_id, project = org
    add_spans(engine, org_id, project, minutes_ago=1, count=5)
    if engine.dialect.name == "postgresql":
        worker = get_engine(f"{db_url}?application_name=obs_alert_loop_test")
        beat(worker, "loop-test")  # a pooled connection to lose

        def cut():
            with engine.connect() as conn:
                killed = conn.execute(
                    text(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE application_name = 'obs_alert_loop_test'"
                    )
                ).scalar_one()
            assert killed >= 1

        def heal():
            pass

    else:
        worker, locks = engine, []

        def cut():
            lock = sqlite3.connect(engine.url.database, timeout=0.1, isolation_level=None)
            lock.execute("BEGIN IMMEDIATE")
            locks.append(lock)

        def heal():
            for lock in locks:
                lock.rollback()
                lock.close()

    stop, rounds = threading.Event(), []

    def evaluate_round():  # what the worker's alert loop runs each round
        rounds.append(1)
        if len(rounds) == 1:
            cut()
        elif len(rounds) == 2:
            heal()
        try:
            beat(worker, "loop-test")
            evaluate(worker, NOW)
        finally:
            if len(rounds) == 2:
                stop.set()

    with caplog.at_level(logging.INFO, logger="observatory.alerts"):
        _forever("alerts", 0, stop, evaluate_round)
    lines = [(r.levelname, r.getMessage(), r.exc_info) for r in caplog.records]
    assert len(rounds) == 2
    assert [(level, exc) for level, _, exc in lines] == [("WARNING", None), ("INFO", None)]
    assert "alerts round: database unavailable" in lines[0][1]
    assert "reachable again" in lines[1][1]  # logged only after round 2 succeeded
