"""Dialect constructs give the same answers as polars on both databases."""

import random
from datetime import UTC, datetime, timedelta

import polars as pl
from sqlalchemy import func, select

from observatory_core.storage.dialect import percentile_cont, time_bucket
from observatory_core.storage.schema import spans
from tests.helpers import all_spans, make_org, span, write


def _random_spans(engine, n=400, seed=3):
    rng = random.Random(seed)
    org, (project,) = make_org(engine, "acme")
    base = datetime(2026, 5, 1, tzinfo=UTC)
    rows = [
        span(
            org,
            project,
            base + timedelta(seconds=rng.randrange(3 * 86400)),
            duration_ms=round(rng.lognormvariate(5, 1), 3),
            model=rng.choice(["m1", "m2", "m3"]),
        )
        for _ in range(n)
    ]
    write(engine, rows)
    return all_spans(engine)


def test_percentiles_match_polars_linear_interpolation(engine):
    df = _random_spans(engine)
    for q in (0.5, 0.9, 0.95, 0.99):
        query = (
            select(spans.c.model, percentile_cont(spans.c.duration_ms, q))
            .group_by(spans.c.model)
            .order_by(spans.c.model)
        )
        with engine.connect() as conn:
            got = dict(conn.execute(query).all())
        expected = dict(
            df.group_by("model").agg(pl.col("duration_ms").quantile(q, "linear")).iter_rows()
        )
        assert got.keys() == expected.keys()
        for model, value in expected.items():
            assert abs(got[model] - value) < 1e-6, (q, model)


def test_hour_buckets_match_polars_truncation(engine):
    df = _random_spans(engine)
    bucket = time_bucket(spans.c.start_time, 3600).label("b")
    with engine.connect() as conn:
        got = dict(conn.execute(select(bucket, func.count()).group_by(bucket)).all())
    expected = dict(df.group_by(pl.col("start_time").dt.truncate("1h")).agg(pl.len()).iter_rows())
    assert {k.replace(tzinfo=UTC): v for k, v in expected.items()} == got
    assert all(k.tzinfo is not None and k.minute == 0 for k in got)
