"""Output tokens per second counts the time after the first token where it is known (issue 24
§4), on raw spans and from rollups alike; the edge cases fall back or give no value."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from observatory_core.filters.spec import FilterSpec
from observatory_core.metrics.engine import run_metrics
from observatory_core.metrics.query import MetricQuery
from observatory_core.rollups.maintain import rebuild_on
from tests.helpers import admin_scope, make_org, span, write

NOW = datetime(2026, 11, 20, 12, tzinfo=UTC)
# model -> (output tokens, duration ms, ttft ms) and the tokens per second it must give
CASES = {
    "streamed": ((100, 2000.0, 1000.0), 100.0),  # 100 tokens in the 1 s after the first
    "no-ttft": ((100, 2000.0, None), 50.0),  # as before: over the whole call
    "ttft-at-end": ((100, 2000.0, 2000.0), 50.0),  # in one piece: over the whole call
    "ttft-past-end": ((100, 2000.0, 2500.0), 50.0),
    "no-tokens": ((0, 2000.0, 500.0), None),
    "no-duration": ((100, 0.0, None), None),
}


@pytest.mark.parametrize("force", ["raw", "rollup"])
def test_tokens_per_second_after_the_first_token(engine, force):
    org, (project,) = make_org(engine, "acme")
    rows = [
        span(
            org,
            project,
            NOW - timedelta(hours=2, minutes=i),
            model=model,
            output_tokens=out,
            duration_ms=duration,
            ttft_ms=ttft,
        )
        for i, (model, ((out, duration, ttft), _)) in enumerate(CASES.items())
    ]
    write(engine, rows)
    query = MetricQuery(
        series=("tokens_per_second.avg", "tokens_per_second.count"),
        filters=FilterSpec(relative="1d"),
        bucket=None,
        group_by=("model",),
    )
    result = run_metrics(engine, admin_scope(org), query, now=NOW, force=force)
    got = {r["model"]: r["tokens_per_second.avg"] for r in result.frame.to_dicts()}
    for model, (_, want) in CASES.items():
        assert got[model] == (pytest.approx(want) if want is not None else None), model
    counts = {r["model"]: r["tokens_per_second.count"] for r in result.frame.to_dicts()}
    assert counts["no-tokens"] == counts["no-duration"] == 0


def test_a_rebuild_fills_the_rollups_from_the_same_definition(engine):
    """`rollups rebuild` (run by migration 0012) recomputes the stored `tps` partials."""
    org, (project,) = make_org(engine, "acme")
    write(
        engine,
        [
            span(
                org,
                project,
                NOW - timedelta(hours=3),
                output_tokens=300,
                duration_ms=4000.0,
                ttft_ms=1000.0,
                model="m",
            )
        ],
    )
    with engine.begin() as conn:
        rebuild_on(conn)
    query = MetricQuery(
        series=("tokens_per_second.sum",), filters=FilterSpec(relative="1d"), bucket=None
    )
    result = run_metrics(engine, admin_scope(org), query, now=NOW, force="rollup")
    assert result.frame["tokens_per_second.sum"][0] == pytest.approx(100.0)
