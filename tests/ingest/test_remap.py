"""`remap`: spans stored before the mapping knew Traceloop's and OpenInference's names get their
fields from the attributes they kept; figures and rollups follow; a second run changes nothing."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import genai_prices
import polars as pl
import pytest

from observatory_core.filters.spec import FilterSpec
from observatory_core.ingest.remap import remap
from observatory_core.metrics.engine import run_metrics
from observatory_core.metrics.query import MetricQuery
from tests.helpers import (
    admin_scope,
    all_spans,
    assert_rollups_match_rebuild,
    make_org,
    span,
    write,
)

NOW = datetime(2026, 11, 20, 12, tzinfo=UTC)


def _as_stored_before(org, project, start, i: int) -> dict:
    """What ingest stored before it knew these names: kept in attributes, fields empty."""
    return span(
        org,
        project,
        start,
        operation="other",
        provider="openai",
        model=None,
        cost_source="unpriced",
        input_tokens=100,
        output_tokens=20,
        status="error" if i % 4 == 0 else "ok",
        attributes={
            "llm.request.type": "chat",
            "llm.invocation_parameters": json.dumps({"model": "gpt-4o-mini", "temperature": 0}),
            "traceloop.association.properties.user_id": f"u-{i % 3}",
            "traceloop.association.properties.session_id": f"s-{i}",
            "traceloop.association.properties.customer": "acme-corp",
            "app.kept": i,
        },
    )


def _price(tokens_in: int, tokens_out: int) -> float:
    usage = genai_prices.Usage(input_tokens=tokens_in, output_tokens=tokens_out)
    return float(genai_prices.calc_price(usage, "gpt-4o-mini", provider_id="openai").total_price)


def test_remap_fills_fields_figures_and_rollups_once(engine):
    org, (project,) = make_org(engine, "acme")
    other, (other_project,) = make_org(engine, "globex")
    old = [
        _as_stored_before(org, project, NOW - timedelta(hours=2, minutes=i), i) for i in range(12)
    ]
    older = [_as_stored_before(org, project, NOW - timedelta(days=3), 99)]
    theirs = [_as_stored_before(other, other_project, NOW - timedelta(hours=1), 7)]
    write(engine, old + older + theirs)

    report = remap(engine, org_id=org, since=NOW - timedelta(days=1), batch=5)
    assert (report.scanned, report.changed, report.orgs_rebuilt) == (12, 12, 1)
    df = all_spans(engine)
    mine = df.filter((pl.col("org_id") == org) & (pl.col("start_time") >= NOW - timedelta(days=1)))
    assert mine["operation"].unique().to_list() == ["chat"]
    assert mine["model"].unique().to_list() == ["gpt-4o-mini"]
    assert sorted(mine["user_id"].unique().to_list()) == ["u-0", "u-1", "u-2"]
    assert mine["session_id"].n_unique() == 12
    assert all(m == {"customer": "acme-corp"} for m in mine["metadata"].to_list())
    assert mine["cost_source"].unique().to_list() == ["computed"]
    assert mine["total_cost_usd"].to_list() == pytest.approx([_price(100, 20)] * 12)
    for attributes in mine["attributes"].to_list():  # (a struct column: absent keys read None)
        assert attributes.get("llm.request.type") is None and attributes["app.kept"] is not None
        assert not [
            k for k, v in attributes.items() if k.startswith("traceloop.") and v is not None
        ]
    # outside --org and --since: untouched
    untouched = df.filter(
        (pl.col("org_id") == other) | (pl.col("start_time") < NOW - timedelta(days=1))
    )
    assert untouched["operation"].unique().to_list() == ["other"]
    assert untouched["model"].null_count() == untouched.height

    # the figures follow: requests, errors and cost by model come from the rebuilt rollups
    query = MetricQuery(
        series=("request_count.count", "error_count.count", "total_cost.sum"),
        filters=FilterSpec(relative="24h"),
        bucket=None,
        group_by=("model",),
    )
    got = run_metrics(engine, admin_scope(org), query, now=NOW, force="rollup").frame.to_dicts()
    assert got == [
        {
            "model": "gpt-4o-mini",
            "request_count.count": 12,
            "error_count.count": 3,
            "total_cost.sum": pytest.approx(12 * _price(100, 20)),
        }
    ]
    assert_rollups_match_rebuild(engine)

    again = remap(engine, org_id=org)
    assert (again.scanned, again.changed, again.orgs_rebuilt) == (13, 1, 1)  # only the older one
    assert remap(engine).changed == 1  # globex's span; then nothing is left to learn
    assert remap(engine).changed == 0


def test_remap_fills_time_to_first_token_from_kept_attributes_and_events(engine):
    """Spans stored before the mapping read these names: Vercel's GenAI telemetry attribute,
    its legacy milliseconds, OpenLLMetry's kept chunk event; the p95 follows."""
    org, (project,) = make_org(engine, "ttft-org")
    kept = {
        0: {"gen_ai.client.operation.time_to_first_chunk": 0.25},
        1: {"ai.stream.msToFirstChunk": 180},
        2: {
            "otel.events": [
                {"name": "gen_ai.content.completion.chunk", "attributes": {}, "count": 9},
                # a chunk event kept before offsets were stored says nothing: left empty
            ]
        },
        3: {
            "otel.events": [
                {"name": "note", "attributes": {}, "offset_ms": 5.0},
                {
                    "name": "gen_ai.content.completion.chunk",
                    "attributes": {},
                    "count": 4,
                    "offset_ms": 310.0,
                },
            ]
        },
    }
    rows = [
        span(
            org,
            project,
            NOW - timedelta(minutes=10 + i),
            operation="chat",
            model="gpt-4o-mini",
            ttft_ms=None,
            attributes=attributes,
        )
        for i, attributes in kept.items()
    ]
    write(engine, rows)
    remap(engine, org_id=org)
    df = all_spans(engine).filter(pl.col("org_id") == org).sort("start_time", descending=True)
    assert df["ttft_ms"].to_list() == [
        pytest.approx(250),
        pytest.approx(180),
        None,
        pytest.approx(310),
    ]
    assert "ai.stream.msToFirstChunk" not in df["attributes"][1]
    assert remap(engine, org_id=org).changed == 0  # a second run changes nothing
