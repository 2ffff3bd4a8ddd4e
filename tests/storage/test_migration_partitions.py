"""Migration 0017 on a populated database: 100k spans move into PostgreSQL's monthly
partitions with every column, row and index, answer every index-backed query as before, and
go back on downgrade. On SQLite it only adds the retention columns."""

from __future__ import annotations

from alembic import command
from sqlalchemy import text

from observatory_core.storage.engine import get_engine
from observatory_core.storage.migrate import alembic_config, upgrade
from tests.storage.test_packed_sketch import fresh_url  # noqa: F401 (a fixture)

N = 100_000

# Spans over three months of 2026 (and a few far outside, for the default partition), two
# orgs and projects, a column added by hand to stand for one another branch adds.
FILL = f"""
INSERT INTO orgs (id, slug, name, created_at) VALUES (1, 'a', 'A', now()), (2, 'b', 'B', now());
INSERT INTO projects (id, org_id, slug, name) VALUES (1, 1, 'p', 'P'), (2, 1, 'q', 'Q'),
  (3, 2, 'p', 'P');
ALTER TABLE spans ADD COLUMN extra_tag text;
INSERT INTO spans (org_id, project_id, trace_id, span_id, parent_span_id, start_time, end_time,
  duration_ms, name, operation, provider, model, environment, user_id, session_id, status,
  input_tokens, output_tokens, total_tokens, total_cost_usd, cost_source, input_text,
  output_text, tags, metadata, attributes, duplicate_of, llm_call, extra_tag)
SELECT 1 + (i % 7 = 0)::int, 1 + (i % 3), lpad(to_hex(i / 4), 32, '0'), lpad(to_hex(i), 16, '0'),
  CASE WHEN i % 4 = 0 THEN NULL ELSE lpad(to_hex(i - i % 4), 16, '0') END,
  CASE WHEN i % 5000 = 1 THEN timestamptz '2019-01-01' + i * interval '1 second'
       ELSE timestamptz '2026-08-01' + i * interval '77 seconds' END,
  timestamptz '2026-08-01' + i * interval '77 seconds' + interval '1 second',
  (i % 997) * 1.5, 'chat ' || (i % 13), CASE WHEN i % 9 = 0 THEN 'other' ELSE 'chat' END,
  'openai', 'model-' || (i % 5), 'prod', 'user' || (i % 101), 'sess' || (i % 211),
  CASE WHEN i % 17 = 0 THEN 'error' ELSE 'ok' END, i % 300, i % 70, i % 370,
  (i % 1000) / 1e5, 'computed', 'question number ' || i, 'answer ' || (i % 50),
  '["t"]', '{{"k": "v"}}', '{{}}', CASE WHEN i % 1000 = 3 THEN 'ffffffffffffffff' END,
  i % 9 = 0 AND i % 2 = 0, 'x' || (i % 4)
FROM generate_series(1, {N}) AS i;
"""

# Each read one index serves; answers must not change.
QUERIES = {
    "by_id": "SELECT trace_id, span_id FROM spans WHERE id IN (5, 50000, 99999) ORDER BY id",
    "key": "SELECT id FROM spans WHERE org_id = 1 AND trace_id = lpad(to_hex(2500), 32, '0') "
    "ORDER BY id",
    "org_start_trace": "SELECT count(DISTINCT trace_id) FROM spans WHERE org_id = 1 AND "
    "start_time >= '2026-08-20' AND start_time < '2026-09-10'",
    # rounded: a float sum's last digits follow the scan order, which partitions change
    "project_start": "SELECT count(*), round(sum(total_cost_usd)::numeric, 9) FROM spans "
    "WHERE org_id = 1 AND project_id = 2 AND start_time >= '2026-08-05' AND start_time < '2026-10-01'",
    "session": "SELECT count(*) FROM spans WHERE org_id = 1 AND session_id = 'sess7'",
    "user": "SELECT count(*) FROM spans WHERE org_id = 2 AND user_id = 'user3'",
    "roots": "SELECT id FROM spans WHERE org_id = 1 AND parent_span_id IS NULL "
    "ORDER BY start_time DESC, id DESC LIMIT 50",
    "duration": "SELECT id FROM spans WHERE org_id = 1 ORDER BY duration_ms DESC, id LIMIT 40",
    "cost": "SELECT id FROM spans WHERE org_id = 2 ORDER BY total_cost_usd DESC, id LIMIT 40",
    "status": "SELECT count(*) FROM spans WHERE org_id = 1 AND status = 'error' AND "
    "start_time >= '2026-09-01'",
    "model": "SELECT count(*) FROM spans WHERE org_id = 1 AND model = 'model-3' AND "
    "start_time < '2026-09-15'",
    "duplicates": "SELECT id FROM spans WHERE org_id = 1 AND duplicate_of IS NOT NULL ORDER BY id",
    "wrappers": "SELECT count(*) FROM spans WHERE org_id = 1 AND operation = 'other' AND llm_call",
    "text": "SELECT id FROM spans WHERE input_text ILIKE '%number 4242%' ORDER BY id",
    "stray": "SELECT count(*) FROM spans WHERE start_time < '2020-01-01'",
}
SAMPLE = "SELECT * FROM spans WHERE id % 997 = 0 ORDER BY id"


def _snapshot(engine) -> dict:
    with engine.connect() as conn:
        out = {name: conn.execute(text(sql)).all() for name, sql in QUERIES.items()}
        out["count"] = conn.execute(text("SELECT count(*) FROM spans")).scalar()
        out["sample"] = [tuple(r) for r in conn.execute(text(SAMPLE))]
        out["columns"] = [
            r[0]
            for r in conn.execute(
                text(
                    "SELECT column_name FROM information_schema.columns "
                    "WHERE table_name = 'spans' ORDER BY ordinal_position"
                )
            )
        ]
        out["indexes"] = sorted(
            conn.execute(text("SELECT indexname FROM pg_indexes WHERE tablename = 'spans'"))
            .scalars()
            .all()
        )
    return out


def test_spans_move_into_monthly_partitions_and_back(fresh_url):  # noqa: F811
    engine = get_engine(fresh_url)
    upgrade(engine, "0016")  # the revision before 0017
    if engine.dialect.name != "postgresql":
        upgrade(engine, "0017")
        with engine.connect() as conn:
            columns = {r[1] for r in conn.exec_driver_sql("PRAGMA table_info(orgs)")}
        assert {"span_retention_days", "rollup_retention_days"} <= columns
        return
    with engine.begin() as conn:
        conn.connection.driver_connection.execute(FILL)  # no parameters: % is SQL's modulo
    before = _snapshot(engine)
    assert before["count"] == N
    upgrade(engine, "0017")
    after = _snapshot(engine)
    with engine.connect() as conn:
        kind = conn.execute(text("SELECT relkind FROM pg_class WHERE relname = 'spans'")).scalar()
        parts = (
            conn.execute(
                text(
                    "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                    "WHERE i.inhparent = 'spans'::regclass ORDER BY 1"
                )
            )
            .scalars()
            .all()
        )
        in_default = conn.execute(text("SELECT count(*) FROM spans_default")).scalar()
        keys = dict(
            conn.execute(
                text(
                    "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
                    "WHERE conrelid = 'spans'::regclass AND contype IN ('p', 'u', 'f')"
                )
            ).all()
        )
    assert kind == "p"
    assert {"spans_p2026_08", "spans_p2026_09", "spans_p2026_10", "spans_default"} <= set(parts)
    assert in_default == 0, "every month holding spans got its partition (2019 too)"
    assert "spans_p2019_01" in parts
    assert keys["pk_spans"] == "PRIMARY KEY (id, start_time)"
    assert keys["uq_spans_org_trace_span"] == "UNIQUE (org_id, trace_id, span_id, start_time)"
    assert {"fk_spans_org_id_orgs", "fk_spans_project_id_projects"} <= set(keys)
    assert after == before
    # new spans still get ids from the same sequence, after the copied ones
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO spans (org_id, project_id, trace_id, span_id, start_time, end_time, "
            "duration_ms, name, operation, status, cost_source, tags, metadata, attributes) "
            "VALUES (1, 1, 'n', 'n', '2026-09-09', '2026-09-09', 1, 'n', 'chat', 'ok', "
            "'computed', '[]', '{}', '{}')"
        )
        new_id = conn.exec_driver_sql("SELECT id FROM spans WHERE trace_id = 'n'").scalar()
        conn.exec_driver_sql("DELETE FROM spans WHERE trace_id = 'n'")
    assert new_id > N
    with engine.begin() as conn:
        command.downgrade(alembic_config(engine, conn), "0016")
    assert _snapshot(engine) == before
    with engine.connect() as conn:
        kind = conn.execute(text("SELECT relkind FROM pg_class WHERE relname = 'spans'")).scalar()
    assert kind == "r"
