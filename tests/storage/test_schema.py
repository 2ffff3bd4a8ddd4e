"""Schema and migrations on both databases: upgrade is idempotent and values round-trip."""

import re
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, inspect, select
from sqlalchemy.exc import OperationalError

from observatory_core.storage.migrate import current_revision, head_revision, upgrade
from observatory_core.storage.schema import spans
from tests.helpers import make_org, span, write

PARTITION = re.compile(r"spans_(p\d{4}_\d{2}|default)")


def test_upgrade_reaches_head_and_is_idempotent(engine):
    upgrade(engine)
    upgrade(engine)
    assert current_revision(engine) == head_revision()
    tables = set(inspect(engine).get_table_names())
    assert {"orgs", "projects", "users", "user_projects", "model_prices", "spans"} <= tables
    index_names = {ix["name"] for ix in inspect(engine).get_indexes("spans")}
    assert "ix_spans_org_start_trace" in index_names


def test_migrations_match_the_schema_module(engine):
    """schema.py and the Alembic migrations describe the same tables (no drift)."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from observatory_core.storage.schema import metadata

    def not_a_partition(name, kind, _parent) -> bool:
        # PostgreSQL's monthly span partitions (migration 0017) are the spans table's storage
        return kind != "table" or not PARTITION.fullmatch(name or "")

    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"include_name": not_a_partition})
        diff = compare_metadata(context, metadata)
    # FTS5 tables and trigram indexes live only in migrations, on purpose.
    diff = [d for d in diff if "fts" not in str(d) and "trgm" not in str(d)]
    if engine.dialect.name == "postgresql":  # the span key holds the partition key there
        diff = [d for d in diff if not _span_key_with_start_time(d)]
    assert diff == []


def _span_key_with_start_time(change) -> bool:
    kind, constraint = change[0], change[1]
    if kind not in ("add_constraint", "remove_constraint") or constraint.table.name != "spans":
        return False
    columns = [c.name for c in constraint.columns]
    return columns in (
        ["org_id", "trace_id", "span_id"],
        ["org_id", "trace_id", "span_id", "start_time"],
    )


def test_rollup_columns_from_the_metric_declarations_are_the_migrated_ones(engine):
    """The rollup tables' count and measure columns come from semantic/metrics.py; the
    migrated tables hold the same columns in the same order (the order is a layout choice of
    migration 0009, which the comparison above does not see)."""
    from observatory_core.storage.schema import ROLLUP_COUNTS, ROLLUP_MEASURES, ROLLUPS

    assert ROLLUP_COUNTS == ("span_count", "error_count")
    assert ROLLUP_MEASURES[:3] == ("duration", "total_cost", "total_tokens")
    for table in ROLLUPS.values():
        migrated = [(c["name"], c["nullable"]) for c in inspect(engine).get_columns(table.name)]
        assert migrated == [(c.name, c.nullable) for c in table.columns], table.name


def test_span_values_round_trip_with_microseconds(engine):
    org, (project,) = make_org(engine, "acme")
    start = datetime(2026, 3, 4, 5, 6, 7, 891011, tzinfo=UTC)
    row = span(
        org,
        project,
        start,
        duration_ms=12.5,
        tags=["a", "b"],
        metadata={"k": "v", "n": 3},
        attributes={"x": {"y": [1, 2]}},
        input_tokens=7,
        output_tokens=5,
        input_cost_usd=0.25,
        output_cost_usd=0.5,
        quality_score=0.9,
    )
    assert write(engine, [row]) == 1
    with engine.connect() as conn:
        got = conn.execute(select(spans)).mappings().one()
    assert got["start_time"] == start
    assert got["end_time"] == start + timedelta(milliseconds=12.5)
    assert got["tags"] == ["a", "b"]
    assert got["metadata"] == {"k": "v", "n": 3}
    assert got["attributes"] == {"x": {"y": [1, 2]}}
    assert got["total_tokens"] == 12
    assert got["total_cost_usd"] == 0.75


def test_resent_span_is_not_duplicated(engine):
    org, (project,) = make_org(engine, "acme")
    start = datetime(2026, 1, 1, tzinfo=UTC)
    first = span(org, project, start, trace_id="a" * 32, span_id="b" * 16)
    assert write(engine, [first, dict(first)]) == 1
    assert write(engine, [dict(first)]) == 0
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(spans)).scalar() == 1


def test_same_ids_in_another_org_are_separate_spans(engine):
    a, (pa,) = make_org(engine, "acme")
    b, (pb,) = make_org(engine, "globex")
    start = datetime(2026, 1, 1, tzinfo=UTC)
    rows = [span(o, p, start, trace_id="c" * 32, span_id="d" * 16) for o, p in ((a, pa), (b, pb))]
    assert write(engine, rows) == 2


def test_long_text_is_cut_and_flagged(engine):
    from observatory_core.ingest.spanrows import complete_row

    org, (project,) = make_org(engine, "acme")
    row = span(org, project, datetime(2026, 1, 1, tzinfo=UTC))
    row = complete_row({**row, "input_text": "x" * 50, "text_truncated": False}, max_chars=20)
    write(engine, [row])
    with engine.connect() as conn:
        got = conn.execute(select(spans.c.input_text, spans.c.text_truncated)).one()
    assert got == ("x" * 20, True)


def test_sqlite_runs_in_wal_mode(sqlite_engine):
    with sqlite_engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


def test_shared_traces_are_found_through_their_partial_index(engine):
    """`is_shared` is written bare (`trace_totals.shared`), the very term of the partial index
    `ix_trace_totals_shared`: written `shared = 1` (as SQLAlchemy writes a Boolean on SQLite)
    the tree lists read every trace of their window a second time to find the few shared ones."""
    from sqlalchemy import literal

    from observatory_core.storage.schema import is_shared, trace_totals

    org, (web, jobs) = make_org(engine, "acme", projects=("web", "jobs"))
    start = datetime(2026, 11, 4, tzinfo=UTC)
    rows = [span(org, web, start + timedelta(minutes=i)) for i in range(40)]
    root = rows[0]
    rows.append(span(org, jobs, start, trace_id=root["trace_id"], parent_span_id=root["span_id"]))
    write(engine, rows)
    if engine.dialect.name == "sqlite":  # statistics, as the worker's ANALYZE leaves them
        with engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE")
    t = trace_totals
    query = select(t.c.trace_id).where(t.c.org_id == literal(org), is_shared(t))
    sql = str(query.compile(engine, compile_kwargs={"literal_binds": True}))
    assert sql.rstrip().endswith("trace_totals.shared")
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            # the partial index can answer this WHERE (SQLite refuses an INDEXED BY it cannot
            # use: "no query solution", as it does for `shared = 1`); whether the planner
            # prefers it over an org index depends on what else the table holds
            pinned = sql.replace(
                "FROM trace_totals", "FROM trace_totals INDEXED BY ix_trace_totals_shared"
            )
            plan = " ".join(r[-1] for r in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {pinned}"))
            assert "ix_trace_totals_shared" in plan
            with pytest.raises(OperationalError, match="no query solution"):
                conn.exec_driver_sql(
                    f"EXPLAIN QUERY PLAN {pinned.replace('.shared', '.shared = 1')}"
                )
        assert {r[0] for r in conn.execute(query)} == {root["trace_id"]}
