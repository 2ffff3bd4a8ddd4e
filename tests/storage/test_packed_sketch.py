"""The packed latency sketch: what each database stores, adds and merges reads back bin by bin."""

from __future__ import annotations

import uuid

import numpy as np
import pytest
from sqlalchemy import column, literal, literal_column, select, table, text, union_all
from sqlalchemy.types import Integer

from observatory_core.storage.engine import get_engine
from observatory_core.storage.latency_bins import BINS
from observatory_core.storage.migrate import upgrade
from observatory_core.storage.packed_sketch import (
    sketch_add,
    sketch_merge,
    sketch_of,
    sketch_out,
    unpack,
)

RNG = np.random.default_rng(7)
# Empty, one span, counts at the packing limit in the first and last bins, sparse and dense rows.
LIMIT = 10**12 - 1  # PostgreSQL's limit per bin (SQLite's, 2**40 - 1, is larger)
CASES = [
    np.zeros(BINS, dtype=np.int64),
    np.eye(1, BINS, 17, dtype=np.int64)[0],
    np.array([LIMIT] + [0] * (BINS - 2) + [LIMIT], dtype=np.int64),
    np.where(RNG.random(BINS) < 0.2, RNG.integers(1, 10**6, BINS), 0),
    RNG.integers(0, 10**9, BINS),
]


def _pack_sql(counts: np.ndarray, dialect: str) -> str:
    """A literal of the packed number, written independently of the code under test."""
    if dialect == "postgresql":
        return f"CAST({sum(int(c) * 10 ** (12 * i) for i, c in enumerate(counts))} AS NUMERIC)"
    number = sum(int(c) << (40 * i) for i, c in enumerate(counts))
    return "X'" + number.to_bytes((number.bit_length() + 7) // 8, "little").hex() + "'"


def test_packed_values_read_back_bin_by_bin(engine):
    dialect = engine.dialect.name
    with engine.connect() as conn:
        out = [
            conn.execute(select(sketch_out(literal_column(_pack_sql(c, dialect))))).scalar_one()
            for c in CASES
        ]
    np.testing.assert_array_equal(unpack(out, dialect), np.array(CASES))


def test_add_and_merge_add_bin_by_bin(engine):
    dialect = engine.dialect.name
    a, b = CASES[3], CASES[4]
    pa, pb = (literal_column(_pack_sql(x, dialect)) for x in (a, b))
    rows = union_all(*(select(x.label("s")) for x in (pa, pb, pa))).subquery()
    with engine.connect() as conn:
        added = conn.execute(select(sketch_out(sketch_add(pa, pb)))).scalar_one()
        merged = conn.execute(select(sketch_out(sketch_merge(rows.c.s)))).scalar_one()
        nothing = conn.execute(
            select(sketch_out(sketch_merge(rows.c.s))).where(literal_column("1") == 0)
        ).scalar_one()
    got = unpack([added, merged, nothing], dialect)
    np.testing.assert_array_equal(got[0], a + b)
    np.testing.assert_array_equal(got[1], 2 * a + b)
    np.testing.assert_array_equal(got[2], np.zeros(BINS))


def test_sketch_of_counts_each_bin_and_skips_nulls(engine):
    bins = [0, 5, 5, 63, None, 20, 5]
    rows = union_all(*(select(literal(b, Integer).label("b")) for b in bins)).subquery()
    with engine.connect() as conn:
        out = conn.execute(select(sketch_out(sketch_of(rows.c.b)))).scalar_one()
    want = np.bincount([b for b in bins if b is not None], minlength=BINS)
    np.testing.assert_array_equal(unpack([out], engine.dialect.name)[0], want)


def test_unpack_of_nothing_is_an_empty_matrix():
    for dialect in ("sqlite", "postgresql"):
        assert unpack([], dialect).shape == (0, BINS)
        np.testing.assert_array_equal(unpack([None], dialect), np.zeros((1, BINS)))


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'migrate.db'}"
        return
    from tests.conftest import pg_admin

    name = f"obs_migrate_{uuid.uuid4().hex[:8]}"
    pg_admin(f'CREATE DATABASE "{name}"')
    url = request.getfixturevalue("pg_url").rsplit("/", 1)[0] + f"/{name}"
    yield url
    get_engine(url).dispose()
    pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_migration_0009_converts_bin_columns_both_ways(fresh_url):
    """Rows written with 64 bin columns (0008) read back the same bins packed (0009), and the
    downgrade restores the columns."""
    from observatory_core.storage.migrate import alembic_config

    engine = get_engine(fresh_url)
    upgrade(engine, "0008")
    counts = [CASES[1], CASES[3], CASES[4]]  # the old columns are 32-bit
    with engine.begin() as conn:
        conn.execute(
            text("INSERT INTO orgs (slug, name, created_at) VALUES ('m', 'M', :at)"),
            {"at": _at(engine, 0)},
        )
        org = conn.execute(text("SELECT id FROM orgs WHERE slug = 'm'")).scalar_one()
        for hour, row in enumerate(counts):
            names = ", ".join(f"lat_{i:02d}" for i in range(BINS))
            given = ", ".join(str(int(c)) for c in row)
            conn.execute(
                text(
                    "INSERT INTO rollup_1hour (org_id, bucket_start, project_id, provider, model, "
                    "environment, operation, status, span_count, error_count, duration_count, "
                    "ttft_count, input_tokens_count, output_tokens_count, total_tokens_count, "
                    "input_cost_count, output_cost_count, total_cost_count, tps_count, "
                    f"quality_count, total_cost_sum, {names}) VALUES (:org, :at, 1, 'openai', "
                    f"'gpt-4o', 'production', 'chat', 'ok', 3, 1, 3, 0, 0, 0, 0, 0, 0, 2, 0, 0, "
                    f"0.25, {given})"
                ),
                {"org": org, "at": _at(engine, hour)},
            )
    upgrade(engine)
    rollups = table("rollup_1hour", column("bucket_start"), column("latency_sketch"))
    with engine.connect() as conn:
        got = conn.execute(
            select(sketch_out(rollups.c.latency_sketch)).order_by(rollups.c.bucket_start)
        ).scalars()
        packed = unpack(list(got), engine.dialect.name)
        kept = conn.execute(text("SELECT span_count, total_cost_sum FROM rollup_1hour")).all()
    np.testing.assert_array_equal(packed, np.array(counts))
    assert {tuple(r) for r in kept} == {(3, 0.25)}

    from alembic import command

    with engine.begin() as conn:
        command.downgrade(alembic_config(engine, conn), "0008")
    with engine.connect() as conn:
        back = conn.execute(
            text(
                "SELECT "
                + ", ".join(f"lat_{i:02d}" for i in range(BINS))
                + " FROM rollup_1hour ORDER BY bucket_start"
            )
        ).all()
    np.testing.assert_array_equal(np.array(back), np.array(counts))


def _at(engine, hour: int):
    from datetime import UTC, datetime, timedelta

    at = datetime(2026, 11, 1, tzinfo=UTC) + timedelta(hours=hour)
    if engine.dialect.name == "sqlite":  # stored as microseconds since the epoch
        return int(at.timestamp()) * 10**6
    return at
