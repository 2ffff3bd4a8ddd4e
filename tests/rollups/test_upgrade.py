"""The upgrade that creates the rollups over stored spans fills them (rollups/upgrade.py);
storage's own upgrade, which knows nothing of rollups, refuses rather than leave them empty."""

from __future__ import annotations

import pytest
from sqlalchemy import select, text

from observatory_core.rollups.upgrade import upgrade
from observatory_core.storage import migrate
from observatory_core.storage.engine import get_engine
from observatory_core.storage.schema import ROLLUPS, trace_totals

START_US = 1_777_593_600_000_000  # 2026-05-01 00:00 UTC, as SQLite stores it


def _database_before_rollups(tmp_path):
    """A SQLite database at revision 0004 (no rollups yet) holding two spans of one trace."""
    engine = get_engine(f"sqlite:///{tmp_path / 'old.db'}")
    migrate.upgrade(engine, "0004")
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO orgs (id, slug, name, created_at) VALUES (1, 'a', 'A', 0)"))
        conn.execute(text("INSERT INTO projects (id, org_id, slug, name) VALUES (1, 1, 'p', 'P')"))
        for i, ms in enumerate((120.0, 80.0)):
            conn.execute(
                text(
                    "INSERT INTO spans (org_id, project_id, trace_id, span_id, start_time, "
                    "end_time, duration_ms, name, operation, status, cost_source, tags, "
                    "metadata, attributes, total_cost_usd) VALUES (1, 1, 't1', :sid, :start, "
                    ":end, :ms, 'chat', 'chat', 'ok', 'computed', '[]', '{}', '{}', 0.5)"
                ),
                {"sid": f"s{i}", "start": START_US + i, "end": START_US + i + 1000, "ms": ms},
            )
    return engine


def test_the_rollups_are_filled_from_the_stored_spans(tmp_path):
    engine = _database_before_rollups(tmp_path)
    upgrade(engine)
    assert migrate.current_revision(engine) == migrate.head_revision()
    with engine.connect() as conn:
        minute = conn.execute(select(ROLLUPS["1min"].c.span_count)).scalars().all()
        trace = conn.execute(select(trace_totals.c.span_count, trace_totals.c.total_cost_usd)).one()
    assert minute == [2]
    assert tuple(trace) == (2, 1.0)


def test_storage_alone_refuses_to_leave_the_rollups_empty(tmp_path):
    engine = _database_before_rollups(tmp_path)
    with pytest.raises(migrate.RebuildNeeded, match="migrate"):
        migrate.upgrade(engine)
    assert migrate.current_revision(engine) == "0004"  # rolled back, nothing half done


def test_the_tokens_per_second_partials_are_recomputed_by_0012(tmp_path):
    """Rollups written under the whole-call definition hold other `tps_*` partials; the upgrade
    to 0012 recomputes them from the spans (over the time after the first token)."""
    from datetime import UTC, datetime

    from alembic import command
    from sqlalchemy import update

    from tests.helpers import make_org, span, write

    engine = get_engine(f"sqlite:///{tmp_path / 'tps.db'}")
    upgrade(engine)  # today's code writes today's columns: store the span at head ...
    org, (project,) = make_org(engine, "a")
    at = datetime(2026, 5, 1, 10, tzinfo=UTC)
    write(engine, [span(org, project, at, output_tokens=300, duration_ms=4000.0, ttft_ms=1000.0)])
    with engine.begin() as conn:  # ... then go back to 0011 with it
        command.downgrade(migrate.alembic_config(engine, conn), "0011")
    hour = ROLLUPS["1hour"]
    with engine.begin() as conn:  # what the rollup writer of 0011 stored: 300 / 4 s
        conn.execute(update(hour).values(tps_sum=75.0, tps_min=75.0, tps_max=75.0))
    with pytest.raises(migrate.RebuildNeeded, match="recomputes the rollups"):
        migrate.upgrade(engine)  # storage alone cannot: refused, rolled back
    assert migrate.current_revision(engine) == "0011"
    upgrade(engine)
    assert migrate.current_revision(engine) == migrate.head_revision()
    with engine.connect() as conn:
        assert conn.execute(select(hour.c.tps_sum)).scalar_one() == pytest.approx(100.0)
