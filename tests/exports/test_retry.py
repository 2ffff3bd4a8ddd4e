"""A dropped connection is not a failed export: transient database errors start the job over
(counted as attempts, with a backoff), permanent ones fail it at once, and the attempts are
bounded. On PostgreSQL the connection is really terminated (pg_terminate_backend) at 30%."""

from __future__ import annotations

import csv
import gzip
import io
import json
import logging
import sqlite3
import threading

import psycopg
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError, OperationalError, ProgrammingError

from observatory_core.alerts.loops import _forever
from observatory_core.api.export_schemas import ExportJob
from observatory_core.api.exports import _job as job_json
from observatory_core.exports import job_attempt, job_claims
from observatory_core.exports import worker as worker_module
from observatory_core.exports.jobs import create_export, get_export
from observatory_core.exports.worker import work_once
from observatory_core.filters.spec import FilterSpec
from observatory_core.storage.engine import get_engine
from observatory_core.storage.schema import spans
from observatory_core.storage.transient import is_transient

WORKER_APP = "obs_export_worker_test"


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch):
    monkeypatch.setattr(worker_module, "RETRY_BACKOFF_S", 0.01)


def source_rows(engine, org_id) -> int:
    with engine.connect() as conn:
        return conn.execute(
            select(func.count()).select_from(spans).where(spans.c.org_id == org_id)
        ).scalar_one()


def rows_in_file(path, fmt, compression) -> int:
    raw = path.read_bytes()
    raw = gzip.decompress(raw) if compression == "gzip" else raw
    if fmt == "csv":
        return len(list(csv.DictReader(io.StringIO(raw.decode()))))
    return len([json.loads(line) for line in raw.decode().splitlines()])


def cut_at(fraction: float, monkeypatch, cut) -> list[int]:
    """Call `cut()` once, when the first attempt has written `fraction` of its rows."""
    seen: list[int] = []
    real = job_attempt.still_mine

    def watch(engine, job_id, config, progress, rows):
        if progress >= fraction and not seen:
            seen.append(rows)
            cut()
        return real(engine, job_id, config, progress, rows)

    monkeypatch.setattr(job_attempt, "still_mine", watch)
    return seen


@pytest.mark.parametrize(("fmt", "compression"), [("csv", "gzip"), ("jsonl", "none")])
def test_a_dropped_connection_mid_export_is_retried_to_a_complete_file(
    data, scope, config, monkeypatch, caplog, fmt, compression
):
    """PostgreSQL: every connection of the worker's pool is terminated by the server at 30%
    (csv takes the COPY path there). SQLite has no server to drop a connection, so the same
    place raises its transient error, 'database is locked'."""
    if data.dialect.name == "postgresql":
        url = data.url.render_as_string(hide_password=False)
        worker_engine = get_engine(f"{url}?application_name={WORKER_APP}")

        def cut():
            with data.connect() as conn:
                killed = conn.execute(
                    text(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE application_name = :app AND datname = current_database()"
                    ),
                    {"app": WORKER_APP},
                ).scalar_one()
            assert killed >= 1

    else:
        worker_engine = data

        def cut():
            raise OperationalError(
                "UPDATE export_jobs", {}, sqlite3.OperationalError("database is locked")
            )

    job = create_export(data, scope, FilterSpec(relative=None), fmt=fmt, compression=compression)
    cut_rows = cut_at(0.3, monkeypatch, cut)
    with caplog.at_level(logging.WARNING, logger="observatory.exports"):
        assert work_once(worker_engine, config) == "completed"
    done = get_export(data, scope, job["id"])
    expected = source_rows(data, scope.org_id)
    assert cut_rows and 0 < cut_rows[0] < expected
    assert (done["status"], done["attempts"], done["error_message"]) == ("completed", 2, None)
    assert done["rows_written"] == expected
    assert rows_in_file(config.export_dir / done["file_name"], fmt, compression) == expected
    assert list(config.export_dir.glob(".*.part")) == []
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "retrying" in warning.getMessage() and warning.exc_info is None
    assert ExportJob.model_validate(job_json(done, scope)).attempts == 2  # the API's job JSON


def test_a_permanent_error_fails_the_job_at_once(data, scope, config, monkeypatch):
    def cut():
        raise ProgrammingError("SELECT", {}, Exception('column "x" does not exist'))

    job = create_export(data, scope, FilterSpec(relative=None))
    cut_at(0.3, monkeypatch, cut)
    assert work_once(data, config) == "failed"
    failed = get_export(data, scope, job["id"])
    assert failed["attempts"] == 1 and "failed unexpectedly" in failed["error_message"]


def test_transient_errors_are_retried_a_bounded_number_of_times(data, scope, config, monkeypatch):
    def always(engine, job_id, cfg, progress, rows):
        raise OperationalError("UPDATE", {}, sqlite3.OperationalError("database is locked"))

    monkeypatch.setattr(job_attempt, "still_mine", always)
    job = create_export(data, scope, FilterSpec(relative=None))
    assert work_once(data, config) == "failed"
    failed = get_export(data, scope, job["id"])
    assert failed["attempts"] == job_claims.MAX_ATTEMPTS
    assert f"last of {job_claims.MAX_ATTEMPTS} attempts" in failed["error_message"]
    assert list(config.export_dir.iterdir()) == []


def _sa(orig, **kw):
    return OperationalError("SELECT 1", {}, orig, **kw)


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (psycopg.errors.AdminShutdown("terminating connection"), True),  # 57P01
        (psycopg.errors.SerializationFailure("could not serialize"), True),  # 40001
        (psycopg.errors.DeadlockDetected("deadlock detected"), True),  # 40P01
        (psycopg.errors.ConnectionFailure("connection failure"), True),  # 08006
        (psycopg.errors.TooManyConnections("too many clients"), True),  # 53300
        (psycopg.OperationalError("server closed the connection unexpectedly"), True),
        (_sa(psycopg.errors.AdminShutdown("x")), True),
        (DBAPIError("SELECT 1", {}, Exception("gone"), connection_invalidated=True), True),
        (_sa(sqlite3.OperationalError("database is locked")), True),
        (RuntimeError("page failed"), False),
        (psycopg.errors.UniqueViolation("duplicate key"), False),
        (psycopg.errors.UndefinedTable("no such table"), False),
        (psycopg.errors.DiskFull("no space"), False),  # 53100: retrying does not free disk
        (_sa(sqlite3.OperationalError("no such table: spans")), False),
        (ProgrammingError("SELECT", {}, Exception("syntax error")), False),
        (ValueError("bad"), False),
    ],
)
def test_which_errors_are_transient(error, transient):
    assert is_transient(error) is transient


def test_a_chained_transient_error_counts():
    try:
        try:
            raise psycopg.errors.AdminShutdown("terminating connection")
        except psycopg.Error as inner:
            raise RuntimeError("the page could not be read") from inner
    except RuntimeError as outer:
        assert is_transient(outer)


def test_loops_log_a_lost_database_once_without_a_traceback(caplog):
    """The alert evaluator, webhook sender and watchdog loops: one line when the database goes,
    one when it is back, and the rounds go on."""
    stop, calls = threading.Event(), []

    def work():
        calls.append(1)
        if len(calls) <= 3:
            raise _sa(psycopg.errors.AdminShutdown("terminating connection"))
        stop.set()

    with caplog.at_level(logging.INFO, logger="observatory.alerts"):
        _forever("alerts", 0, stop, work)
    assert len(calls) == 4
    lines = [(r.levelname, r.getMessage(), r.exc_info) for r in caplog.records]
    assert [(level, exc) for level, _, exc in lines] == [("WARNING", None), ("INFO", None)]
    assert "database unavailable (AdminShutdown: terminating connection)" in lines[0][1]
    assert "reachable again" in lines[1][1]
