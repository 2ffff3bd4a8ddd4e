"""The sparse latency sketch: what each database stores, compacts, adds and merges reads back
bin by bin, in the same plain bytes on every store (storage/packed_sketch.py)."""

from __future__ import annotations

import struct
import uuid

import numpy as np
import pytest
from sqlalchemy import column, literal, literal_column, select, table, text, union_all
from sqlalchemy.types import Integer

from observatory_core.storage.engine import get_engine
from observatory_core.storage.latency_bins import BINS
from observatory_core.storage.migrate import upgrade
from observatory_core.storage.packed_sketch import (
    decode,
    dense,
    encode,
    sketch_add,
    sketch_compact,
    sketch_merge,
    sketch_of,
)

RNG = np.random.default_rng(7)
# Empty, one span, a count past one record's limit in the first and last bins, sparse and
# dense rows.
CASES = [
    np.zeros(BINS, dtype=np.int64),
    np.eye(1, BINS, 17, dtype=np.int64)[0],
    np.array([200_000] + [0] * (BINS - 2) + [65_536], dtype=np.int64),
    np.where(RNG.random(BINS) < 0.2, RNG.integers(1, 10**6, BINS), 0),
    RNG.integers(0, 10**5, BINS),
]


def _records(counts: np.ndarray) -> bytes:
    """The canonical bytes, written independently of the code under test: per bin holding
    spans, ascending, records of at most 65535 as 4 big-endian bytes `bin << 16 | count`."""
    out = b""
    for b, c in enumerate(counts):
        c = int(c)
        while c > 0:
            out += struct.pack(">I", b << 16 | min(c, 65535))
            c -= min(c, 65535)
    return out


def _shuffled(counts: np.ndarray) -> bytes:
    """The same sketch, uncompacted: each bin's count split in two records, in random order."""
    records = []
    for b, c in enumerate(counts):
        c = int(c)
        if c:
            first = int(RNG.integers(0, c + 1))
            records += [
                _records(np.eye(1, BINS, b, dtype=np.int64)[0] * part)
                for part in (first, c - first)
                if part
            ]
    RNG.shuffle(records)
    return b"".join(records)


def _sql(value: bytes, dialect: str):
    hexed = value.hex()
    if dialect == "postgresql":
        return literal_column(f"decode('{hexed}', 'hex')")
    return literal_column(f"X'{hexed}'")


def test_encode_writes_the_documented_records():
    for counts in CASES:
        assert encode(counts) == _records(counts)
        np.testing.assert_array_equal(dense([_records(counts)])[0], counts)


def test_compact_in_the_database_sums_and_sorts_records(engine):
    dialect = engine.dialect.name
    with engine.connect() as conn:
        out = [
            bytes(conn.execute(select(sketch_compact(_sql(_shuffled(c), dialect)))).scalar_one())
            for c in CASES
        ]
    assert out == [_records(c) for c in CASES]


def test_add_and_merge_add_bin_by_bin(engine):
    dialect = engine.dialect.name
    a, b = CASES[3], CASES[4]
    pa, pb = _sql(_records(a), dialect), _sql(_shuffled(b), dialect)
    rows = union_all(*(select(x.label("s")) for x in (pa, pb, pa))).subquery()
    with engine.connect() as conn:
        added = conn.execute(select(sketch_add(pa, pb))).scalar_one()
        merged = conn.execute(select(sketch_merge(rows.c.s))).scalar_one()
        stored = conn.execute(select(sketch_compact(sketch_merge(rows.c.s)))).scalar_one()
        nothing = conn.execute(
            select(sketch_merge(rows.c.s)).where(literal_column("1") == 0)
        ).scalar_one()
    assert bytes(added) == _records(a + b)
    assert bytes(stored) == _records(2 * a + b)
    got = dense([merged, nothing])
    np.testing.assert_array_equal(got[0], 2 * a + b)
    np.testing.assert_array_equal(got[1], np.zeros(BINS))


def test_merging_is_associative_and_order_free(engine):
    """(a + b) + c, a + (b + c) and every order of the three store the same bytes."""
    dialect = engine.dialect.name
    a, b, c = (_sql(_shuffled(x), dialect) for x in (CASES[2], CASES[3], CASES[4]))
    with engine.connect() as conn:

        def one(statement):
            return bytes(conn.execute(select(statement)).scalar_one())

        left = one(sketch_add(sketch_add(a, b), c))
        right = one(sketch_add(a, sketch_add(b, c)))
        orders = [
            one(
                sketch_compact(
                    sketch_merge(union_all(*(select(x.label("s")) for x in order)).subquery().c.s)
                )
            )
            for order in ((a, b, c), (c, a, b), (b, c, a))
        ]
    assert left == right == orders[0] == orders[1] == orders[2]
    assert left == _records(CASES[2] + CASES[3] + CASES[4])


def test_sketch_of_counts_each_bin_and_skips_nulls(engine):
    bins = [0, 5, 5, BINS - 1, None, 20, 5]
    rows = union_all(*(select(literal(b, Integer).label("b")) for b in bins)).subquery()
    with engine.connect() as conn:
        out = conn.execute(select(sketch_of(rows.c.b))).scalar_one()
        none = conn.execute(
            select(sketch_of(rows.c.b)).where(literal_column("1") == 0)
        ).scalar_one()
    want = np.bincount([b for b in bins if b is not None], minlength=BINS)
    assert bytes(out) == _records(want)
    assert bytes(none) == b""


def test_decode_of_nothing_is_empty():
    rows, bins, counts = decode([])
    assert len(rows) == len(bins) == len(counts) == 0
    assert dense([]).shape == (0, BINS)
    np.testing.assert_array_equal(dense([None, b""]), np.zeros((2, BINS)))


@pytest.mark.parametrize(
    "rows, parts",
    [(3, 40), (60, 1), (60, 3)],  # few rows of many merged sketches (summed densely); many
    ids=["dense", "sorted", "runs"],  # stored rows alone (already sorted); many short runs
)
def test_decode_sums_each_rows_records_per_bin(rows, parts):
    want = np.zeros((rows + 1, BINS), dtype=np.int64)  # one more row: the empty sketch
    values = []
    for r in range(rows):
        pieces = []
        for _ in range(parts):
            counts = np.where(RNG.random(BINS) < 0.05, RNG.integers(1, 70_000, BINS), 0)
            want[r] += counts
            pieces.append(_shuffled(counts) if parts > 1 else _records(counts))
        values.append(b"".join(pieces))
    values.append(None)
    got_rows, got_bins, got_counts = decode(values)
    at = np.nonzero(want)  # row then bin, ascending: the order decode promises
    np.testing.assert_array_equal(got_rows, at[0])
    np.testing.assert_array_equal(got_bins, at[1])
    np.testing.assert_array_equal(got_counts, want[at])


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
    old = np.random.default_rng(7)
    counts = [  # the old columns are 32-bit, 64 of them
        np.eye(1, 64, 17, dtype=np.int64)[0],
        np.where(old.random(64) < 0.2, old.integers(1, 10**6, 64), 0),
        old.integers(0, 10**9, 64),
    ]
    with engine.begin() as conn:
        conn.execute(
            text("INSERT INTO orgs (slug, name, created_at) VALUES ('m', 'M', :at)"),
            {"at": _at(engine, 0)},
        )
        org = conn.execute(text("SELECT id FROM orgs WHERE slug = 'm'")).scalar_one()
        for hour, row in enumerate(counts):
            names = ", ".join(f"lat_{i:02d}" for i in range(64))
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
    upgrade(engine, "0009")
    rollups = table("rollup_1hour", column("bucket_start"), column("latency_sketch"))
    with engine.connect() as conn:
        same = conn.execute(
            select(
                *(
                    rollups.c.latency_sketch == literal_column(_old_packed(c, engine.dialect.name))
                    for c in counts
                )
            ).order_by(rollups.c.bucket_start)
        ).all()
        kept = conn.execute(text("SELECT span_count, total_cost_sum FROM rollup_1hour")).all()
    assert [[bool(x) for x in row] for row in same] == np.eye(len(counts), dtype=bool).tolist()
    assert {tuple(r) for r in kept} == {(3, 0.25)}

    from alembic import command

    with engine.begin() as conn:
        command.downgrade(alembic_config(engine, conn), "0008")
    with engine.connect() as conn:
        back = conn.execute(
            text(
                "SELECT "
                + ", ".join(f"lat_{i:02d}" for i in range(64))
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


def _old_packed(counts: np.ndarray, dialect: str) -> str:
    """0009's packed number as a literal (PostgreSQL: base 10^12 NUMERIC; SQLite: base 2^40
    little-endian BLOB)."""
    if dialect == "postgresql":
        return f"CAST({sum(int(c) * 10 ** (12 * i) for i, c in enumerate(counts))} AS NUMERIC)"
    number = sum(int(c) << (40 * i) for i, c in enumerate(counts))
    return "X'" + number.to_bytes((number.bit_length() + 7) // 8, "little").hex() + "'"
