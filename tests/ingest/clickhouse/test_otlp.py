"""The OTLP receiver end to end into the ClickHouse span store: the OpenTelemetry SDK's own
OTLP/HTTP exporter posts to the real route (uvicorn, in this process), the receiver and the
group-commit writer store into chDB. Spans stored once, a resend counted once in the rollups
and trace totals (against polars on the sent rows), twins set aside, a wrapper above an LLM
call not counted as one, a bad span refused alone, and a store that fails answered 503."""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

import polars as pl
import pytest

from observatory_core.ingest.apikeys import create_key
from tests.helpers import admin_scope, make_org
from tests.live_server import free_port

NOW_NS = time.time_ns() - 120 * 10**9  # recent: stored twins are looked up 30 minutes back
MS = 10**6


@dataclass
class Sent:
    """What the test meant to send: the reference the store is compared with."""

    name: str
    scope: str
    input_tokens: int
    output_tokens: int
    counted: bool = True  # not set aside as a twin
    llm_call: bool = True
    span: object = None  # the SDK's ReadableSpan


@pytest.fixture(scope="module")
def server(ch_ingest):
    """The real `/v1/traces` route on uvicorn in a thread, its receiver and writer on the
    module's SQLite database (the spans going to the span store), and an ingest key."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.routing import Route

    from observatory_core.api import otlp_route
    from observatory_core.ingest.receiver import Receiver
    from observatory_core.ingest.writer import BatchWriter

    engine = ch_ingest.engine
    org_id, _ = make_org(engine, "ch-sdk", ("default",))
    key = create_key(engine, admin_scope(org_id), "sdk key")
    receiver, writer = Receiver(engine), BatchWriter(engine)
    patch = pytest.MonkeyPatch()
    patch.setattr(otlp_route, "get_ingest", lambda _settings: (receiver, writer))
    app = Starlette(routes=[Route("/v1/traces", otlp_route.otlp_traces, methods=["POST"])])
    port = free_port()
    web = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=web.run, daemon=True)
    thread.start()
    while not web.started and thread.is_alive():  # start-up: no fixed sleep
        time.sleep(0.005)
    try:
        yield {"base": f"http://127.0.0.1:{port}", "key": key, "org_id": org_id, **vars(ch_ingest)}
    finally:
        web.should_exit = True
        thread.join(10)
        writer.stop()
        patch.undo()


def _spans() -> tuple[list[Sent], list[Sent], Sent]:
    """The first request's spans, the late twins of two of them, and a bad span."""
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "ch-sdk"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracers = {s: provider.get_tracer(s) for s in ("app", "lib.a", "lib.b")}
    sent: list[Sent] = []

    def make(spec: Sent, at_ms: int, ms: int, parent=None, **attributes) -> Sent:
        start = NOW_NS + at_ms * MS
        context = trace.set_span_in_context(parent.span) if parent else None
        span = tracers[spec.scope].start_span(
            spec.name, context=context, start_time=start, attributes=attributes
        )
        span.end(end_time=start + ms * MS)
        spec.span = span
        return spec

    def chat(model: str, spec: Sent, at_ms: int, parent=None, text: str | None = None):
        extra = {"gen_ai.input.messages": text} if text else {}
        if spec.name == "error call":
            extra["error.type"] = "RateLimitError"
        return make(
            spec,
            at_ms,
            400,
            parent,
            **{
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "openai",
                "gen_ai.request.model": model,
                "gen_ai.usage.input_tokens": spec.input_tokens,
                "gen_ai.usage.output_tokens": spec.output_tokens,
            },
            **extra,
        )

    hello = '[{"role":"user","parts":[{"type":"text","content":"hello"}]}]'
    # an agent run whose call was instrumented twice, nested: the richer one counts
    root = make(Sent("invoke_agent run", "app", 0, 0, llm_call=False), 0, 2000, None,
                **{"gen_ai.operation.name": "invoke_agent"})  # fmt: skip
    outer = chat("gpt-4o", Sent("chat outer", "lib.a", 100, 20), 10, root, text=hello)
    inner = chat("gpt-4o-2024-08-06", Sent("chat inner", "lib.b", 100, 20, counted=False), 11,
                 outer)  # fmt: skip
    sent += [root, outer, inner]
    # plain calls, each its own trace, tokens all different
    for i in range(20):
        name = "error call" if i == 3 else f"chat {i}"
        sent.append(chat("gpt-4o-mini", Sent(name, "lib.a", 200 + i, 30 + i), 3000 + 500 * i))
    # an unknown wrapper repeating its call's model and usage: the call counts, not the wrapper
    wrapper = make(Sent("wrapper", "app", 50, 5, llm_call=False), 15000, 1000, None,
                   **{"gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": 50,
                      "gen_ai.usage.output_tokens": 5})  # fmt: skip
    sent += [wrapper, chat("gpt-4o", Sent("chat under wrapper", "lib.a", 50, 5), 15010, wrapper)]
    # a NUL in the name is stored as U+FFFD
    sent.append(chat("gpt-4o-mini", Sent("chat \x00 nul", "lib.a", 7, 1), 17000))
    # the first copy of a call sent twice in two traces; its twin comes in a later request
    separate = chat("gpt-4o", Sent("chat separate", "lib.a", 300, 40), 18000, text=hello)
    sent.append(separate)
    late = [
        chat("openai/gpt-4o", Sent("chat late twin", "lib.b", 300, 40, counted=False), 18010),
        # nested under a stored call, starting well after it: found through its trace
        chat(
            "gpt-4o-mini",
            Sent("chat late nested", "lib.b", 205, 35, counted=False),
            5900,
            next(s for s in sent if s.name == "chat 5"),
        ),  # fmt: skip
    ]
    # a span the mapping refuses: a token count past 2,000,000,000
    bad = chat("gpt-4o-mini", Sent("chat bad", "lib.a", 3_000_000_000, 1), 19000)
    provider.shutdown()
    return sent, late, bad


def _export(base: str, key: str, spans: list) -> object:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    exporter = OTLPSpanExporter(
        endpoint=f"{base}/v1/traces", headers={"authorization": f"Bearer {key}"}, timeout=30
    )
    try:
        return exporter.export(spans)
    finally:
        exporter.shutdown()


def _post(base: str, key: str, spans: list) -> tuple[int, dict, bytes]:
    """The SDK's own encoding of `spans`, posted as the exporter does, answer kept."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    body = encode_spans(spans).SerializeToString()
    headers = {"content-type": "application/x-protobuf", "authorization": f"Bearer {key}"}
    request = urllib.request.Request(f"{base}/v1/traces", data=body, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


@pytest.fixture(scope="module")
def sent(server):
    """Sent once with the SDK exporter, the late twin on its own, then all of it again (an
    exporter's resend after a lost answer)."""
    from opentelemetry.sdk.trace.export import SpanExportResult

    spans, late, bad = _spans()
    batch = [s.span for s in spans] + [bad.span]
    later = [s.span for s in late]
    for body in (batch, later, batch + later):
        assert _export(server["base"], server["key"], body) == SpanExportResult.SUCCESS
    return spans + late, bad


def _hex(value: int, width: int) -> str:
    return f"{value:0{width}x}"


def _reference(spans: list[Sent], org_id: int) -> pl.DataFrame:
    return pl.DataFrame(
        [
            {
                "org_id": org_id,
                "name": s.name.replace("\x00", "\ufffd"),
                "trace_id": _hex(s.span.context.trace_id, 32),
                "span_id": _hex(s.span.context.span_id, 16),
                "input_tokens": s.input_tokens,
                "output_tokens": s.output_tokens,
                "counted": s.counted,
                "llm_call": s.llm_call,
            }
            for s in spans
        ]
    )


def _stored(server) -> pl.DataFrame:
    from tests.ingest.clickhouse.conftest import ChIngest

    ch = ChIngest(server["engine"], server["store"])
    return ch.frame(
        "SELECT name, trace_id, span_id, input_tokens, output_tokens, llm_call, duplicate_of, "
        f"duplicate_trace_id FROM {{db}}.spans WHERE org_id = {server['org_id']}"
    )


def test_every_span_sent_is_stored_once_and_the_bad_one_not(server, sent):
    spans, bad = sent
    stored = _stored(server)
    expected = _reference(spans, server["org_id"])
    assert stored.height == expected.height  # raw rows: the resend added none
    assert sorted(stored["span_id"]) == sorted(expected["span_id"])
    assert _hex(bad.span.context.span_id, 16) not in set(stored["span_id"])
    assert "chat \ufffd nul" in set(stored["name"])
    joined = expected.join(stored, on="span_id", suffix="_stored")
    assert (joined["input_tokens"] == joined["input_tokens_stored"]).all()


def test_twins_are_set_aside_and_the_wrapper_is_not_an_llm_call(server, sent):
    spans, _ = sent
    stored = {r["name"]: r for r in _stored(server).iter_rows(named=True)}
    by_name = {s.name: s for s in spans}
    outer, separate = by_name["chat outer"].span, by_name["chat separate"].span
    assert stored["chat late nested"]["duplicate_of"] == _hex(
        by_name["chat 5"].span.context.span_id, 16
    )
    # nested: the richer outer call counts; late: the stored copy keeps counting
    assert stored["chat inner"]["duplicate_of"] == _hex(outer.context.span_id, 16)
    assert stored["chat late twin"]["duplicate_of"] == _hex(separate.context.span_id, 16)
    assert stored["chat late twin"]["duplicate_trace_id"] == _hex(separate.context.trace_id, 32)
    marked = {n for n, r in stored.items() if r["duplicate_of"] is not None}
    assert marked == {s.name for s in spans if not s.counted}
    flags = {n: r["llm_call"] for n, r in stored.items()}
    assert flags == {s.name.replace("\x00", "\ufffd"): s.llm_call for s in spans}


def test_the_rollups_and_trace_totals_count_each_span_once(server, sent):
    from tests.ingest.clickhouse.conftest import ChIngest

    spans, _ = sent
    ch = ChIngest(server["engine"], server["store"])
    org = server["org_id"]
    counted = _reference(spans, org).filter(pl.col("counted"))
    for grain in ("1min", "1hour", "1day"):
        got = ch.frame(
            "SELECT llm_call, toInt64(sum(span_count)) AS spans, "
            "toInt64(sum(input_tokens_sum)) AS input_tokens, "
            "toInt64(sum(output_tokens_sum)) AS output_tokens "
            f"FROM {{db}}.rollup_{grain} WHERE org_id = {org} GROUP BY llm_call ORDER BY llm_call"
        )
        expected = (
            counted.group_by("llm_call")
            .agg(
                pl.len().cast(pl.Int64).alias("spans"),
                pl.col("input_tokens").sum().cast(pl.Int64),
                pl.col("output_tokens").sum().cast(pl.Int64),
            )
            .sort("llm_call")
        )
        assert got.to_dicts() == expected.to_dicts(), grain
    totals = ch.frame(
        "SELECT trace_id, toInt64(sum(span_count)) AS spans, sum(total_tokens) AS tokens "
        f"FROM {{db}}.trace_totals WHERE org_id = {org} GROUP BY trace_id ORDER BY trace_id"
    )
    expected = (
        counted.group_by("trace_id")
        .agg(
            pl.len().cast(pl.Int64).alias("spans"),
            (pl.col("input_tokens") + pl.col("output_tokens")).sum().cast(pl.Int64).alias("tokens"),
        )
        .sort("trace_id")
    )
    assert totals.to_dicts() == expected.to_dicts()


def test_partial_success_names_the_refused_span_and_stores_the_rest(server, sent):
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceResponse,
    )

    spans, bad = sent
    before = _stored(server).height
    good = spans[3]  # stored already: the answer is the same for a resend
    status, _, body = _post(server["base"], server["key"], [good.span, bad.span])
    answer = ExportTraceServiceResponse.FromString(body)
    assert status == 200 and answer.partial_success.rejected_spans == 1
    assert "chat bad" in answer.partial_success.error_message
    assert _stored(server).height == before


class _Failing:
    """The store's client, its inserts failing as a server that went away would; with
    `after=True`, failing after the insert went through (the answer lost on the way back)."""

    def __init__(self, client, after: bool) -> None:
        self._client, self._after, self.calls = client, after, 0

    def __getattr__(self, name):
        return getattr(self._client, name)

    def insert(self, *args, **kwargs):
        from clickhouse_connect.driver.exceptions import OperationalError

        self.calls += 1
        if self._after:
            self._client.insert(*args, **kwargs)
        raise OperationalError("Error HTTPConnectionPool: connection reset by peer")


@pytest.mark.parametrize("after", [False, True], ids=["before-the-insert", "after-the-insert"])
def test_a_failing_store_answers_503_and_the_retry_counts_once(server, sent, after, monkeypatch):
    from tests.ingest.clickhouse.conftest import ChIngest

    ch = ChIngest(server["engine"], server["store"])
    more, _, _ = _spans()  # new ids, the same shapes: the plain calls, twins of nothing
    new = [s for s in more if s.name.startswith("chat ") and s.name[5:].isdigit()]
    tokens = (
        "SELECT toInt64(sum(input_tokens_sum)) AS tokens, toInt64(sum(span_count)) AS spans "
        f"FROM {{db}}.rollup_1min WHERE org_id = {server['org_id']}"
    )
    before = ch.frame(tokens).row(0, named=True)
    store = server["store"]
    failing = _Failing(store.client, after)
    monkeypatch.setattr(store, "client", failing)
    status, headers, body = _post(server["base"], server["key"], [s.span for s in new])
    assert status == 503 and headers.get("retry-after", headers.get("Retry-After")) == "5"
    assert b"retry" in body and failing.calls == 1
    monkeypatch.setattr(store, "client", failing._client)
    assert _post(server["base"], server["key"], [s.span for s in new])[0] == 200
    ids = ", ".join(f"'{_hex(s.span.context.span_id, 16)}'" for s in new)
    stored = ch.frame("SELECT count() AS n FROM {db}.spans WHERE span_id IN (" + ids + ")")
    assert stored["n"][0] == len(new)
    after_retry = ch.frame(tokens).row(0, named=True)
    assert after_retry["spans"] - before["spans"] == len(new)
    assert after_retry["tokens"] - before["tokens"] == sum(s.input_tokens for s in new)


def _chat_spans(instance: str, specs: list[tuple[str, str, int, object]]) -> list:
    """Chat spans (name, scope, start ms, parent span or None) from a resource of
    `instance`, all with 901 input and 9 output tokens."""
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    provider = TracerProvider(
        resource=Resource.create({"service.name": "ch-sdk", "service.instance.id": instance})
    )
    out = []
    for name, scope, at_ms, parent in specs:
        start = NOW_NS + at_ms * MS
        span = provider.get_tracer(scope).start_span(
            name,
            context=trace.set_span_in_context(parent) if parent else None,
            start_time=start,
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.request.model": "gpt-4o",
                "gen_ai.usage.input_tokens": 901,
                "gen_ai.usage.output_tokens": 9,
            },
        )
        span.end(end_time=start + 300 * MS)
        out.append(span)
    return out


def test_twins_need_one_instance_and_the_orgs_setting_on(server, sent):
    """A late child of another instance is not its parent's twin; one of the same instance
    is. An org that switched the matching off counts both copies."""
    from sqlalchemy import update

    from observatory_core.ingest import to_clickhouse
    from observatory_core.storage.schema import orgs
    from tests.ingest.clickhouse.conftest import ChIngest

    (parent,) = _chat_spans("i-1", [("parent", "lib.a", 30_000, None)])
    other, same = _chat_spans("i-2", [("other instance", "lib.b", 30_010, parent)]) + _chat_spans(
        "i-1", [("same instance", "lib.b", 30_020, parent)]
    )
    for body in ([parent], [other, same]):
        assert _post(server["base"], server["key"], body)[0] == 200
    engine = server["engine"]
    off_id, _ = make_org(engine, "ch-sdk-off", ("default",))
    with engine.begin() as conn:
        conn.execute(update(orgs).where(orgs.c.id == off_id).values(dedup_enabled=False))
    to_clickhouse.forget_settings()
    off_key = create_key(engine, admin_scope(off_id), "off key")
    (outer,) = _chat_spans("i-1", [("outer off", "lib.a", 31_000, None)])
    (inner,) = _chat_spans("i-1", [("inner off", "lib.b", 31_001, outer)])
    assert _post(server["base"], off_key, [outer, inner])[0] == 200
    got = ChIngest(engine, server["store"]).frame(
        "SELECT name, duplicate_of FROM {db}.spans WHERE name IN "
        "('parent', 'other instance', 'same instance', 'outer off', 'inner off')"
    )
    marked = {r["name"]: r["duplicate_of"] for r in got.iter_rows(named=True)}
    assert marked == {
        "parent": None,
        "other instance": None,
        "same instance": _hex(parent.context.span_id, 16),
        "outer off": None,
        "inner off": None,
    }


def test_a_span_store_that_cannot_be_opened_answers_503(server, sent, tmp_path, monkeypatch):
    """The setting naming a folder this process cannot open (chDB opens one folder per
    process; another process holding it is the same answer): retry later, no traceback."""
    from observatory_core.base.settings import get_settings

    more, _, _ = _spans()
    monkeypatch.setenv("OBSERVATORY_SPAN_STORE", f"chdb://{tmp_path}/elsewhere")
    get_settings.cache_clear()
    try:
        status, headers, body = _post(server["base"], server["key"], [more[3].span])
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
    assert status == 503 and headers.get("retry-after", headers.get("Retry-After")) == "5"
    assert b"unavailable" in body and b"Traceback" not in body


def test_nul_characters_everywhere_store_all_spans_on_the_span_store(server):
    """Issue 25's mixed batch on the span store too: 100 spans with a NUL in every place a
    sender can put one (name, attribute key and value, texts, resource, scope, event) are all
    stored, each NUL a U+FFFD, none refused."""
    import json

    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceResponse,
    )

    from tests.ingest.clickhouse.conftest import ChIngest
    from tests.ingest.test_bad_spans import as_protobuf, assert_nul_rows, nul_request

    engine = server["engine"]
    org_id, _ = make_org(engine, "ch-nul", ("default",))
    key = create_key(engine, admin_scope(org_id), "nul key")
    body = as_protobuf(nul_request())
    headers = {"content-type": "application/x-protobuf", "authorization": f"Bearer {key}"}
    request = urllib.request.Request(f"{server['base']}/v1/traces", data=body, headers=headers)
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200
        reply = ExportTraceServiceResponse.FromString(response.read())
    assert reply.partial_success.rejected_spans == 0
    frame = ChIngest(engine, server["store"]).frame(
        "SELECT span_id, name, input_text, output_text, service_name, user_id, error_type, "
        f"error_message, attributes FROM {{db}}.spans WHERE org_id = {org_id} ORDER BY span_id"
    )
    rows = [
        {**r, "attributes": json.loads(r["attributes"])} if isinstance(r["attributes"], str) else r
        for r in frame.iter_rows(named=True)
    ]
    assert_nul_rows(rows)
