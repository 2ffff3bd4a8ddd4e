"""A call sent twice counts once (docs/ingestion.md, "A call instrumented twice"), on both
databases: recorded OTLP of the two patterns (separate traces, nested), through the real
receiver and writer; every figure equals polars over the raw rows that count, and the
duplicate stays visible in the trace detail with its link."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from sqlalchemy import select, update

from observatory_core.accounts.org_settings import dedup_enabled, set_dedup
from observatory_core.alerts.evaluate import evaluate
from observatory_core.alerts.rules import build_rule, create_rule
from observatory_core.filters.spec import FilterSpec
from observatory_core.ingest.dedup import normal_model, set_aside_by_scopes
from observatory_core.ingest.receiver import Receiver
from observatory_core.ingest.writer import BatchWriter
from observatory_core.metrics.engine import run_metrics
from observatory_core.metrics.query import MetricQuery
from observatory_core.rollups.maintain import rebuild
from observatory_core.storage.schema import alert_states, orgs, trace_totals
from observatory_core.traces.detail import get_trace
from tests.helpers import admin_scope, all_spans, assert_rollups_match_rebuild
from tests.ingest.conftest import PROTOBUF
from tests.ingest.test_mapping import kv

LIBRARY = "openinference.instrumentation.openai"  # the instrumentation library: rich spans
SDK = "openai.genai"  # the provider SDK's own GenAI spans: model and tokens only
CALLS = [  # (input tokens, output tokens, failed)
    (412, 88, False),
    (1288, 301, False),
    (37, 9, False),
    (0, 0, True),
]


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)


def _nanos(moment: datetime) -> int:
    return int(moment.timestamp() * 1e9)


def _library_span(n: int, tokens: tuple[int, int, bool], *, model: bool = True) -> dict:
    tin, tout, failed = tokens
    attrs = {
        "openinference.span.kind": "LLM",
        "llm.system": "openai",
        "llm.token_count.prompt": tin,
        "llm.token_count.completion": tout,
        "llm.input_messages.0.message.role": "user",
        "llm.input_messages.0.message.content": f"question {n}",
        "user.id": "dana",
        "session.id": f"s{n}",
    }
    if model:
        attrs["llm.model_name"] = "gpt-4o-2024-08-06"
    if not failed:
        attrs["llm.output_messages.0.message.role"] = "assistant"
        attrs["llm.output_messages.0.message.content"] = f"answer {n}"
        attrs["llm.finish_reason"] = "stop"
    return attrs


def _sdk_span(tokens: tuple[int, int, bool]) -> dict:
    tin, tout, _ = tokens
    return {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "openai/gpt-4o",
        "gen_ai.usage.input_tokens": tin,
        "gen_ai.usage.output_tokens": tout,
    }


def otlp(spans_by_scope: dict[str, list[dict]], service: str = "support-bot") -> bytes:
    """One OTLP request: per scope, spans given as dicts (trace, span, parent, name, start,
    end, attrs, error)."""
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    resource_spans.resource.attributes.append(kv("service.name", service))
    for scope_name, items in spans_by_scope.items():
        scope_spans = resource_spans.scope_spans.add()
        scope_spans.scope.name = scope_name
        for item in items:
            span = scope_spans.spans.add()
            span.trace_id = bytes.fromhex(item["trace"])
            span.span_id = bytes.fromhex(item["span"])
            if item.get("parent"):
                span.parent_span_id = bytes.fromhex(item["parent"])
            span.name = item["name"]
            span.start_time_unix_nano = _nanos(item["start"])
            span.end_time_unix_nano = _nanos(item["end"])
            span.attributes.extend(kv(k, v) for k, v in item["attrs"].items())
            if item.get("error") is not None:
                span.status.code = 2
                span.status.message = item["error"]
    return request.SerializeToString()


def separate_pattern(t0: datetime, calls=CALLS) -> dict[str, list[dict]]:
    """Each call in two traces: the library's (under an agent span) and the SDK's own."""
    library, sdk = [], []
    for n, tokens in enumerate(calls):
        start = t0 + timedelta(seconds=10 * n)
        end = start + timedelta(milliseconds=700 + 100 * n)
        failed = tokens[2]
        library += [
            {
                "trace": f"{n + 1:032x}",
                "span": f"{0xA00 + n:016x}",
                "name": "agent run",
                "start": start - timedelta(milliseconds=5),
                "end": end + timedelta(milliseconds=5),
                "attrs": {"openinference.span.kind": "AGENT"},
            },
            {
                "trace": f"{n + 1:032x}",
                "span": f"{0xB00 + n:016x}",
                "parent": f"{0xA00 + n:016x}",
                "name": "ChatCompletion",
                "start": start,
                "end": end,
                "attrs": _library_span(n, tokens),
                "error": "rate limited" if failed else None,
            },
        ]
        sdk.append(
            {
                "trace": f"{0xF00 + n:032x}",
                "span": f"{0xC00 + n:016x}",
                "name": "chat gpt-4o",
                "start": start + timedelta(milliseconds=3),
                "end": end - timedelta(milliseconds=2),
                "attrs": {
                    **_sdk_span(tokens),
                    **({"error.type": "RateLimitError"} if failed else {}),
                },
                "error": "Error code: 429 - rate limited" if failed else None,
            }
        )
    return {LIBRARY: library, SDK: sdk}


def nested_pattern(t0: datetime, calls=CALLS) -> dict[str, list[dict]]:
    """Each call as a library span with the SDK's span as its child (one trace per call)."""
    library, sdk = [], []
    for n, tokens in enumerate(calls):
        start = t0 + timedelta(seconds=10 * n)
        end = start + timedelta(milliseconds=900)
        failed = tokens[2]
        trace = f"{0xD00 + n:032x}"
        library.append(
            {
                "trace": trace,
                "span": f"{0xD00 + n:016x}",
                "name": "ChatCompletion",
                "start": start,
                "end": end,
                # a failed call: the library's span lacks the model, the SDK's has it
                "attrs": _library_span(n, tokens, model=not failed),
                "error": None if not failed else "",
            }
        )
        sdk.append(
            {
                "trace": trace,
                "span": f"{0xE00 + n:016x}",
                "parent": f"{0xD00 + n:016x}",
                "name": "chat gpt-4o",
                "start": start + timedelta(milliseconds=20),
                "end": end - timedelta(milliseconds=300),
                "attrs": _sdk_span(tokens),
                "error": "Error code: 429 - rate limited" if failed else None,
            }
        )
    return {LIBRARY: library, SDK: sdk}


def send(engine, key: str, body: bytes) -> None:
    decoded = Receiver(engine).decode(
        body, {"content-type": PROTOBUF, "authorization": f"Bearer {key}"}
    )
    assert decoded.rejected == 0
    writer = BatchWriter(engine)
    try:
        assert writer.submit(decoded.rows).result(timeout=60) == []
    finally:
        writer.stop()


def _totals(engine, org_id: int) -> dict:
    query = select(trace_totals).where(trace_totals.c.org_id == org_id)
    with engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(query).mappings()]
    return {
        r["trace_id"]: {k: r[k] for k in ("span_count", "error_count", "total_tokens")}
        for r in rows
    }


def assert_counted_once(engine, org_id: int, calls=CALLS) -> pl.DataFrame:
    """Every figure equals polars over the spans that count, and those are one per call."""
    df = all_spans(engine).filter(pl.col("org_id") == org_id)
    kept = df.filter(pl.col("duplicate_of").is_null())
    llm = kept.filter(pl.col("operation") == "chat")
    assert llm.height == len(calls)
    assert llm["input_tokens"].sum() == sum(c[0] for c in calls)
    assert llm["output_tokens"].sum() == sum(c[1] for c in calls)
    assert llm.filter(pl.col("status") == "error").height == sum(c[2] for c in calls)
    scope = admin_scope(org_id)
    spec = FilterSpec(relative="1d")
    series = ("request_count.count", "total_tokens.sum", "total_cost.sum", "error_count.count")
    from tests.reference import reference_llm_calls

    calls_kept = kept.filter(pl.col("id").is_in(list(reference_llm_calls(df))))  # the requests
    expected = {
        "request_count.count": calls_kept.height,
        "total_tokens.sum": calls_kept["total_tokens"].sum(),
        "total_cost.sum": calls_kept["total_cost_usd"].sum(),
        "error_count.count": calls_kept.filter(pl.col("status") == "error").height,
    }
    for force in ("raw", "rollup"):
        result = run_metrics(
            engine, scope, MetricQuery(series, filters=spec, bucket=None), force=force
        )
        row = result.frame.row(0, named=True)
        for name, value in expected.items():
            assert row[name] == pytest.approx(value), (force, name)
    median = run_metrics(  # a percentile over the spans that count (exact on the raw path)
        engine, scope, MetricQuery(("duration_ms.p50",), filters=spec, bucket=None), force="raw"
    )
    assert median.frame.row(0, named=True)["duration_ms.p50"] == pytest.approx(
        calls_kept["duration_ms"].quantile(0.5, "linear")
    )
    assert_rollups_match_rebuild(engine)
    incremental = _totals(engine, org_id)
    rebuild(engine)
    assert _totals(engine, org_id) == incremental
    for trace, group in kept.group_by("trace_id"):
        assert incremental[trace[0]]["span_count"] == group.height
        assert incremental[trace[0]]["total_tokens"] == group["total_tokens"].sum()
    return df


def _pairs(df: pl.DataFrame) -> dict[str, str]:
    """Duplicate span id -> the span id it is a duplicate of."""
    dups = df.filter(pl.col("duplicate_of").is_not_null())
    return dict(zip(dups["span_id"], dups["duplicate_of"], strict=True))


@pytest.fixture
def acme(org_key):
    engine, org_id, _, key = org_key
    return engine, org_id, key


def test_separate_traces_count_once_and_the_duplicate_links_to_the_call(acme):
    engine, org_id, key = acme
    send(engine, key, otlp(separate_pattern(_now())))
    df = assert_counted_once(engine, org_id)
    # the library's span counts (messages, finish reason, user, session); the SDK's is set aside
    assert _pairs(df) == {f"{0xC00 + n:016x}": f"{0xB00 + n:016x}" for n in range(len(CALLS))}
    failed = df.filter(pl.col("span_id") == f"{0xB00 + 3:016x}").row(0, named=True)
    assert (failed["model"], failed["error_message"]) == ("gpt-4o-2024-08-06", "rate limited")
    sdk_trace = get_trace(engine, admin_scope(org_id), f"{0xF00:032x}")
    (dup,) = sdk_trace.spans
    assert (dup["duplicate_of"], dup["duplicate_trace_id"]) == (f"{0xB00:016x}", f"{1:032x}")
    assert sdk_trace.total_tokens == 0 and sdk_trace.span_count == 1
    counted = get_trace(engine, admin_scope(org_id), f"{1:032x}")
    assert counted.total_tokens == CALLS[0][0] + CALLS[0][1]
    by_scopes = set_aside_by_scopes(engine, admin_scope(org_id))
    assert by_scopes == [
        {"duplicate_scope": SDK, "counted_scope": LIBRARY, "duplicates": len(CALLS)}
    ]


def test_nested_pairs_count_once_and_the_parent_takes_the_model(acme):
    engine, org_id, key = acme
    send(engine, key, otlp(nested_pattern(_now())))
    df = assert_counted_once(engine, org_id)
    assert _pairs(df) == {f"{0xE00 + n:016x}": f"{0xD00 + n:016x}" for n in range(len(CALLS))}
    failed = df.filter(pl.col("span_id") == f"{0xD03:016x}").row(0, named=True)
    assert failed["model"] == "openai/gpt-4o"
    assert failed["error_message"] == "Error code: 429 - rate limited"
    trace = get_trace(engine, admin_scope(org_id), f"{0xD00:032x}")
    assert [s["duplicate_of"] for s in trace.spans] == [None, f"{0xD00:016x}"]
    assert trace.span_count == 2 and trace.total_tokens == CALLS[0][0] + CALLS[0][1]


@pytest.mark.parametrize("pattern", [separate_pattern, nested_pattern])
def test_a_late_twin_takes_over_and_the_buckets_are_refolded(acme, pattern):
    engine, org_id, key = acme
    scopes = pattern(_now())
    send(engine, key, otlp({SDK: scopes[SDK]}))  # the SDK's spans first: they count
    before = all_spans(engine)
    assert before["duplicate_of"].is_null().all() and before.height == len(CALLS)
    send(engine, key, otlp({LIBRARY: scopes[LIBRARY]}))  # the richer twins arrive later
    df = assert_counted_once(engine, org_id)
    assert set(_pairs(df)) == {s["span"] for s in scopes[SDK]}


def test_the_same_scope_twice_is_never_merged(acme):
    engine, org_id, key = acme
    scopes = separate_pattern(_now())
    copy = [{**s, "trace": "9" + s["trace"][1:], "span": "9" + s["span"][1:]} for s in scopes[SDK]]
    send(engine, key, otlp({SDK: scopes[SDK] + copy}))
    df = all_spans(engine)
    assert df.height == 2 * len(CALLS) and df["duplicate_of"].is_null().all()


def test_a_model_of_another_name_or_other_tokens_is_another_call(acme):
    engine, org_id, key = acme
    scopes = separate_pattern(_now(), calls=[(10, 5, False), (10, 5, False)])
    scopes[SDK][0]["attrs"]["gen_ai.request.model"] = "gpt-4o-mini"
    scopes[SDK][1]["attrs"]["gen_ai.usage.output_tokens"] = 6
    send(engine, key, otlp(scopes))
    assert all_spans(engine)["duplicate_of"].is_null().all()
    assert normal_model("openai/gpt-4o-2024-08-06") == normal_model("gpt-4o") == "gpt-4o"
    assert normal_model("claude-3-5-sonnet-20241022") == "claude-3-5-sonnet"


def test_the_org_switch_off_keeps_both_and_is_audited(acme):
    engine, org_id, key = acme
    scope = admin_scope(org_id, username="ada")
    assert dedup_enabled(engine, scope)
    assert set_dedup(engine, scope, False) and not set_dedup(engine, scope, False)
    send(engine, key, otlp(separate_pattern(_now())))
    df = all_spans(engine)
    assert df["duplicate_of"].is_null().all()
    result = run_metrics(
        engine,
        scope,
        MetricQuery(("request_count.count",), filters=FilterSpec(relative="1d"), bucket=None),
    )
    from tests.reference import reference_llm_calls

    # both spans of each call count (the requests are the LLM calls among them)
    assert result.frame.row(0, named=True)["request_count.count"] == len(reference_llm_calls(df))
    assert len(reference_llm_calls(df)) == 2 * len(CALLS)
    from observatory_core.accounts.audit import AuditFilter, read_entries

    (entry,) = read_entries(engine, scope, AuditFilter(action="org.dedup"))
    assert entry["username"] == "ada"
    assert (entry["before"], entry["after"]) == ({"dedup_enabled": True}, {"dedup_enabled": False})


def test_an_alert_and_an_export_count_each_call_once(acme, tmp_path):
    from observatory_core.exports.jobs import create_export, get_export
    from observatory_core.exports.worker import WorkerConfig, work_once

    engine, org_id, key = acme
    send(engine, key, otlp(separate_pattern(_now())))
    kept = all_spans(engine).filter(pl.col("duplicate_of").is_null())
    scope = admin_scope(org_id)
    rule = build_rule(
        name="tokens", series="total_tokens.sum", comparator=">", threshold=1, window_s=3600
    )
    rule_id = create_rule(engine, scope, rule)
    evaluate(engine, datetime.now(UTC))
    with engine.connect() as conn:
        value = conn.execute(
            select(alert_states.c.last_value).where(alert_states.c.rule_id == rule_id)
        ).scalar_one()
    assert value == kept["total_tokens"].sum() == sum(c[0] + c[1] for c in CALLS)
    fields = ["span_id", "total_tokens", "total_cost_usd", "duplicate_of"]
    job = create_export(engine, scope, FilterSpec(relative="1d"), fmt="csv", fields=fields)
    config = WorkerConfig(export_dir=tmp_path, heartbeat_timeout=timedelta(seconds=30))
    assert work_once(engine, config) == "completed"
    job = get_export(engine, scope, job["id"])
    rows = list(csv.DictReader(io.StringIO((tmp_path / job["file_name"]).read_text())))
    assert len(rows) == all_spans(engine).height  # every span is listed, the twin too
    counted_rows = [r for r in rows if not r["duplicate_of"]]
    assert sum(int(r["total_tokens"]) for r in counted_rows) == kept["total_tokens"].sum()
    assert sum(float(r["total_cost_usd"]) for r in counted_rows) == pytest.approx(
        kept["total_cost_usd"].sum()
    )


def test_orgs_default_to_matching(acme):
    engine, org_id, _ = acme
    with engine.connect() as conn:
        assert conn.execute(select(orgs.c.dedup_enabled).where(orgs.c.id == org_id)).scalar()
    with engine.begin() as conn:  # the column holds a plain boolean on both stores
        conn.execute(update(orgs).where(orgs.c.id == org_id).values(dedup_enabled=False))
    assert not dedup_enabled(engine, admin_scope(org_id))


def _twins(org_id: int, project: int, start: datetime) -> list[dict]:
    from tests.helpers import span

    common = dict(model="gpt-4o", input_tokens=30, output_tokens=4, service_name="bot")
    return [
        span(org_id, project, start, scope_name=LIBRARY, input_text="hi", **common),
        span(org_id, project, start + timedelta(milliseconds=10), scope_name=SDK, **common),
    ]


def test_old_spans_pair_within_their_batch_only(org_key):
    """Past the look-back (an import of last week), twins pair only within one batch."""
    from observatory_core.ingest.persist import write_spans

    engine, org_id, project_ids, _ = org_key
    week_ago = datetime.now(UTC) - timedelta(days=7)
    write_spans(engine, _twins(org_id, project_ids[0], week_ago))  # one batch: paired
    assert all_spans(engine)["duplicate_of"].is_null().sum() == 1
    later = _twins(org_id, project_ids[0], week_ago + timedelta(hours=1))
    write_spans(engine, later[:1])
    write_spans(engine, later[1:])  # its twin stored long after the look-back: both count
    assert all_spans(engine)["duplicate_of"].is_null().sum() == 3
    recent = _twins(org_id, project_ids[0], datetime.now(UTC) - timedelta(minutes=2))
    write_spans(engine, recent[1:])
    write_spans(engine, recent[:1])  # within the look-back: paired across batches
    assert all_spans(engine)["duplicate_of"].is_null().sum() == 4
    assert_rollups_match_rebuild(engine)
