"""Requests are LLM calls, each counted once (issue 24 §1), through the real OTLP path on both
stores: an agent framework's run adds no request and no model-less row; an `other` wrapper
with a model and tokens counts only when no LLM call lies below it, whichever order its spans
arrive in; rollups and raw spans agree."""

from __future__ import annotations

from datetime import timedelta

import polars as pl
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from observatory_core.filters.spec import FilterSpec
from observatory_core.ingest.receiver import Receiver
from observatory_core.ingest.remap import remap
from observatory_core.metrics.engine import run_metrics
from observatory_core.metrics.query import MetricQuery
from tests.helpers import admin_scope, all_spans, assert_rollups_match_rebuild
from tests.ingest.test_mapping import NOW, kv
from tests.ingest.test_receiver import PROTOBUF, headers, store
from tests.reference import reference_llm_calls

CHAT = {
    "gen_ai.operation.name": "chat",
    "gen_ai.system": "openai",
    "gen_ai.request.model": "gpt-4o-mini",
    "gen_ai.usage.input_tokens": 100,
    "gen_ai.usage.output_tokens": 20,
}
# A span of no known operation that repeats its call's model and usage (a framework's wrapper).
WRAPPER = {k: v for k, v in CHAT.items() if k != "gen_ai.operation.name"}


def _request(spans: list[tuple[str, str, str | None, str, dict]]) -> bytes:
    """OTLP with (trace, span id, parent id, name, attributes) spans, a second apart."""
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    resource_spans.resource.attributes.append(kv("service.name", "agent-app"))
    scope = resource_spans.scope_spans.add()
    end = int((NOW - timedelta(minutes=5)).timestamp() * 1e9)
    for i, (trace, span_id, parent, name, attributes) in enumerate(spans):
        span = scope.spans.add()
        span.trace_id = bytes.fromhex(trace)
        span.span_id = bytes.fromhex(span_id)
        if parent:
            span.parent_span_id = bytes.fromhex(parent)
        span.name = name
        span.start_time_unix_nano = end - (len(spans) - i + 1) * 1_000_000_000
        span.end_time_unix_nano = end
        span.attributes.extend(kv(k, v) for k, v in attributes.items())
    return request.SerializeToString()


def _send(engine, key, spans) -> None:
    store(engine, Receiver(engine).decode(_request(spans), headers(key, PROTOBUF), now=NOW))


SERIES = ("request_count.count", "total_tokens.sum", "span_count.count")


def _figures(engine, org_id, force, group_by=(), series=SERIES) -> pl.DataFrame:
    query = MetricQuery(
        series=series,
        filters=FilterSpec(relative="1h"),
        bucket=None,
        group_by=group_by,
    )
    return run_metrics(engine, admin_scope(org_id), query, now=NOW, force=force).frame


def _ids(n: int, tag: str) -> tuple[str, str, str, str]:
    trace = f"{tag}{n:02x}".ljust(32, "0")
    return trace, f"a{n:015x}", f"b{n:015x}", f"c{n:015x}"


def test_an_agent_frameworks_runs_add_no_request_and_no_model_less_row(org_key):
    """Vercel-AI-SDK-like: invoke_agent (model and the call's tokens) > a model-less step
    span > the chat span; 8 calls count 8 requests, their tokens once."""
    engine, org_id, _, key = org_key
    spans = []
    for n in range(8):
        trace, agent, step, chat = _ids(n, "ab")
        spans += [
            (trace, chat, step, "chat gpt-4o-mini", CHAT),
            (trace, step, agent, "step", {}),
            (
                trace,
                agent,
                None,
                "invoke_agent weather",
                {**CHAT, "gen_ai.operation.name": "invoke_agent"},
            ),
        ]
    _send(engine, key, spans)
    df = all_spans(engine)
    assert len(reference_llm_calls(df)) == 8
    assert sorted(df.filter(pl.col("llm_call"))["operation"].to_list()) == ["chat"] * 8
    for force in ("raw", "rollup"):
        totals = _figures(engine, org_id, force).row(0, named=True)
        assert totals["request_count.count"] == 8, force
        assert totals["total_tokens.sum"] == 8 * 120, force  # once, not on invoke_agent too
        assert totals["span_count.count"] == 24, force
        # the Overview's per-model table: requests and tokens by model
        by_model = _figures(engine, org_id, force, ("model",), SERIES[:2])
        assert by_model["model"].to_list() == ["gpt-4o-mini"], force  # no model-less row
        assert by_model["request_count.count"].to_list() == [8], force


@pytest.mark.parametrize("order", ["one batch", "child first", "parent first"])
def test_a_wrapper_with_the_calls_usage_counts_once_whatever_the_order(org_key, order):
    """An `other` span with model and tokens above a chat span: one request. A child that
    arrives after its wrapper was counted clears the wrapper and refolds its rollup rows."""
    engine, org_id, _, key = org_key
    trace, wrapper, chat, _ = _ids(1, "cd")
    parent = (trace, wrapper, None, "my_pipeline", WRAPPER)
    child = (trace, chat, wrapper, "chat gpt-4o-mini", CHAT)
    if order == "one batch":
        _send(engine, key, [child, parent])
    elif order == "child first":
        _send(engine, key, [child])
        _send(engine, key, [parent])
    else:
        _send(engine, key, [parent])
        assert _figures(engine, org_id, "rollup")["request_count.count"].item() == 1
        _send(engine, key, [child])
    df = all_spans(engine)
    assert reference_llm_calls(df) == set(df.filter(pl.col("llm_call"))["id"].to_list())
    for force in ("raw", "rollup"):
        totals = _figures(engine, org_id, force).row(0, named=True)
        assert (totals["request_count.count"], totals["total_tokens.sum"]) == (1, 120), force
    assert_rollups_match_rebuild(engine)


def test_a_lone_wrapper_with_a_model_and_tokens_is_a_request(org_key):
    engine, org_id, _, key = org_key
    trace, span, _, _ = _ids(2, "ef")
    _send(engine, key, [(trace, span, None, "legacy call", WRAPPER)])
    for force in ("raw", "rollup"):
        assert _figures(engine, org_id, force)["request_count.count"].item() == 1, force
    # and an `other` span without tokens is not
    trace, span, _, _ = _ids(3, "ef")
    _send(engine, key, [(trace, span, None, "job", {"gen_ai.request.model": "gpt-4o-mini"})])
    assert _figures(engine, org_id, "raw")["request_count.count"].item() == 1


def test_remap_decides_stored_spans_again(org_key):
    """A span stored as an LLM call by mistake (or before the rule) is decided again, and the
    rollups follow."""
    from sqlalchemy import update

    from observatory_core.storage.schema import spans as spans_table

    engine, org_id, _, key = org_key
    trace, agent, _, chat = _ids(4, "aa")
    _send(
        engine,
        key,
        [
            (trace, chat, agent, "chat", CHAT),
            (trace, agent, None, "wrapper", WRAPPER),
        ],
    )
    with engine.begin() as conn:  # as if stored before the rule: every span flagged
        conn.execute(update(spans_table).values(llm_call=True))
    remap(engine, org_id=org_id)
    df = all_spans(engine)
    assert reference_llm_calls(df) == set(df.filter(pl.col("llm_call"))["id"].to_list())
    assert _figures(engine, org_id, "rollup")["request_count.count"].item() == 1
    assert_rollups_match_rebuild(engine)
