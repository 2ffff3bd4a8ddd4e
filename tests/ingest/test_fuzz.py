"""Every bad body gets an answer (issue 22 part 6), through the real route on both databases:
OTLP/JSON shapes (valid, bent and broken), raw bytes and deep nesting get a 2xx/4xx in the
request's encoding, never a 500; a refused request stores nothing; what was stored before is
never changed; no NUL is ever stored; the rollups still match the spans."""

from __future__ import annotations

import gzip
import itertools
import json
import time

import pytest
from google.protobuf import json_format
from google.rpc import status_pb2
from hypothesis import Phase, example, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from sqlalchemy import func, select

from observatory_core.storage.schema import spans
from tests.helpers import assert_rollups_match_rebuild
from tests.ingest.conftest import JSON, PROTOBUF, call_route, sample

# Bounded so that each test takes seconds: every example is a real request and transaction,
# and a failure is reported as found (shrinking one through the database takes minutes).
FUZZ = settings(
    max_examples=40,
    deadline=None,
    database=None,
    phases=[Phase.explicit, Phase.generate],
)
ANSWERS = {200, 400, 413, 415}
T0 = time.time_ns() - 3600 * 10**9
SAMPLE = ExportTraceServiceRequest.FromString(sample("genai.pb"))
# Ids of the spans stored before fuzzing, so that fuzzed spans also try to overwrite them.
STORED_TRACE = SAMPLE.resource_spans[0].scope_spans[0].spans[0].trace_id.hex()
STORED_SPANS = [s.span_id.hex() for r in SAMPLE.resource_spans for s in r.scope_spans[0].spans]

texts = st.text(
    alphabet=st.one_of(
        st.sampled_from(["a", " ", "\x00", "\ud800", "é", '"', "\\", "'"]), st.characters()
    ),
    max_size=12,
)
# Text a sender may legally put anywhere: any character but a lone surrogate.
clean_texts = st.text(
    alphabet=st.sampled_from(["a", "\x00", "é", "'", "😀"]) | st.characters(codec="utf-8"),
    max_size=12,
)
junk = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=6,
)


def mostly(valid, bad):
    """`valid` about nine times in ten, else `bad`, so that many requests reach the database
    (one_of would drop the repeated branches and pick each half of the time)."""
    return st.sampled_from([True] * 9 + [False]).flatmap(lambda ok: valid if ok else bad)


def nested(depth: int, opener: bytes, closer: bytes) -> bytes:
    return opener * depth + closer * depth


def values(strings, ints, doubles, keys):
    """OTLP/JSON AnyValues, nested a few levels."""
    return st.recursive(
        st.one_of(
            st.builds(lambda v: {"stringValue": v}, strings),
            st.builds(lambda v: {"intValue": v}, ints | ints.map(str)),
            st.builds(lambda v: {"doubleValue": v}, doubles),
            st.builds(lambda v: {"boolValue": v}, st.booleans()),
        ),
        lambda inner: st.one_of(
            st.builds(lambda vs: {"arrayValue": {"values": vs}}, st.lists(inner, max_size=3)),
            st.builds(
                lambda kvs: {"kvlistValue": {"values": kvs}},
                st.lists(st.fixed_dictionaries({"key": keys, "value": inner}), max_size=3),
            ),
        ),
        max_leaves=8,
    )


int64 = st.integers(-(2**63), 2**63 - 1)
# OTLP/JSON spells the doubles JSON has no number for as strings.
clean_doubles = st.floats(allow_nan=False, allow_infinity=False) | st.sampled_from(
    ["NaN", "Infinity", "-Infinity"]
)
clean_values = values(clean_texts, int64, clean_doubles, st.text("abc.", max_size=6))
clean_attributes = st.lists(
    st.fixed_dictionaries({"key": clean_texts.map("app.{}".format), "value": clean_values})
    | st.fixed_dictionaries(
        {
            "key": st.just("gen_ai.usage.input_tokens"),
            # small enough that the rollups' sums of squares stay exact in a float
            "value": st.builds(lambda n: {"intValue": n}, st.integers(0, 10**6)),
        }
    )
    | st.fixed_dictionaries(
        {
            "key": st.sampled_from(["gen_ai.input.messages", "gen_ai.request.model", "metadata"]),
            "value": st.builds(lambda t: {"stringValue": t}, clean_texts),
        }
    ),
    max_size=5,
)
clean_spans = st.fixed_dictionaries(
    {
        "name": clean_texts,
        "kind": st.integers(0, 5),
        "attributes": clean_attributes,
        "events": st.lists(
            st.fixed_dictionaries({"name": clean_texts, "attributes": clean_attributes}),
            max_size=2,
        ),
        "status": st.fixed_dictionaries({"code": st.integers(0, 2), "message": clean_texts}),
    }
)

# What a broken or hostile sender may put in each field instead.
SEMANTIC_KEYS = [
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.output_tokens",
    "gen_ai.usage.cost",
    "gen_ai.input.messages",
    "gen_ai.server.time_to_first_token",
    "observatory.project",
    "metadata",
    "tag.tags",
    "'; DROP TABLE spans; --",
]
bad_values = values(
    texts, st.integers(-(2**65), 2**65), st.floats() | texts, st.sampled_from(SEMANTIC_KEYS) | texts
)
bad_attributes = (
    st.lists(
        st.fixed_dictionaries(
            {"key": st.sampled_from(SEMANTIC_KEYS) | texts, "value": bad_values | junk}
        ),
        min_size=1,
        max_size=5,
    )
    | junk
)
bad_ids = st.sampled_from([STORED_TRACE, *STORED_SPANS, "00" * 16, "00" * 8, "", "xyz"]) | junk
bad_times = st.integers(-10, 2**65) | st.integers(T0 - 10**12, T0 + 10**12).map(str) | junk
BENT = {
    "traceId": bad_ids,
    "spanId": bad_ids,
    "parentSpanId": bad_ids,
    "name": texts | junk,
    "kind": st.integers(-3, 99) | junk,
    "startTimeUnixNano": bad_times,
    "endTimeUnixNano": bad_times,
    "attributes": bad_attributes,
    "events": st.lists(st.fixed_dictionaries({"name": texts, "attributes": bad_attributes})) | junk,
    "status": st.fixed_dictionaries({"code": st.integers(-1, 9), "message": texts}) | junk,
}
span_numbers = itertools.count(10**6)


@st.composite
def span_docs(draw) -> dict:
    """A valid span with up to three fields bent or dropped."""
    n = next(span_numbers)
    doc = dict(
        draw(clean_spans),
        traceId=f"{n:032x}",
        spanId=f"{n:016x}",
        startTimeUnixNano=str(T0 + n),
        endTimeUnixNano=str(T0 + n + 10**6),
    )
    bent = mostly(st.just(set()), st.sets(st.sampled_from(sorted(BENT)), min_size=1, max_size=3))
    for field in draw(bent):
        if draw(st.booleans()):
            doc[field] = draw(BENT[field])
        else:
            doc.pop(field, None)
    return doc


resources = st.fixed_dictionaries(
    {
        "attributes": st.lists(
            st.fixed_dictionaries({"key": clean_texts, "value": clean_values}), max_size=3
        )
    }
)
requests = mostly(
    st.fixed_dictionaries(
        {
            "resourceSpans": st.lists(
                mostly(
                    st.fixed_dictionaries(
                        {
                            "resource": mostly(resources, junk),
                            "scopeSpans": st.lists(
                                mostly(
                                    st.fixed_dictionaries(
                                        {
                                            "scope": mostly(
                                                st.fixed_dictionaries({"name": clean_texts}), junk
                                            ),
                                            "spans": st.lists(
                                                mostly(span_docs(), junk), min_size=1, max_size=4
                                            ),
                                        }
                                    ),
                                    junk,
                                ),
                                min_size=1,
                                max_size=2,
                            ),
                        }
                    ),
                    junk,
                ),
                min_size=1,
                max_size=2,
            )
        }
    ),
    junk,
)


# Each certainly refused, each for another reason; a request mixes them with clean spans.
POISONS = {
    "int over 2^64": {"attributes": [{"key": "n", "value": {"intValue": 2**64}}]},
    "time no integer": {"startTimeUnixNano": "soon"},
    "attributes no list": {"attributes": {"k": 1}},
    "name no string": {"name": 5},
    "lone surrogate": {"name": "half \ud800"},
    "lone surrogate in a field name": {"\udb35": 1},  # once a 500 (protobuf's SystemError)
    "bad trace id": {"traceId": "xyz"},
    "ends before it starts": {"endTimeUnixNano": str(T0 - 10**9)},
    "negative tokens": {
        "attributes": [{"key": "gen_ai.usage.input_tokens", "value": {"intValue": -5}}]
    },
    "deep attribute": {
        "attributes": [
            {"key": "deep", "value": json.loads(nested(60, b'{"arrayValue": {"values": [', b"]}}"))}
        ]
    },
}


def outline_ok(doc) -> bool:
    """Lists of objects where OTLP/JSON has them, down to the spans list: such a request is
    never refused whole, whatever its spans hold."""
    if not isinstance(doc, dict):
        return False
    resources = doc.get("resourceSpans", [])
    if not isinstance(resources, list) or not all(isinstance(r, dict) for r in resources):
        return False
    for resource in resources:
        scopes = resource.get("scopeSpans", [])
        if not isinstance(scopes, list) or not all(isinstance(s, dict) for s in scopes):
            return False
        if any(not isinstance(s.get("spans", []), list) for s in scopes):
            return False
    return True


def span_count(doc) -> int:
    """Span entries in a request of the right outline (0 where the outline is wrong)."""
    total = 0
    resources = doc.get("resourceSpans") if isinstance(doc, dict) else None
    for resource in resources if isinstance(resources, list) else []:
        scopes = resource.get("scopeSpans") if isinstance(resource, dict) else None
        for scope in scopes if isinstance(scopes, list) else []:
            found = scope.get("spans") if isinstance(scope, dict) else None
            total += len(found) if isinstance(found, list) else 0
    return total


VALID_REQUEST = {
    "resourceSpans": [
        {
            "resource": {
                "attributes": [{"key": "service.name", "value": {"stringValue": "f\x00"}}]
            },
            "scopeSpans": [
                {
                    "scope": {"name": "fuzz"},
                    "spans": [
                        {
                            "traceId": "fe" * 16,
                            "spanId": "fe" * 8,
                            "name": "valid\x00",
                            "startTimeUnixNano": str(T0),
                            "endTimeUnixNano": str(T0 + 10**6),
                        }
                    ],
                }
            ],
        }
    ]
}


# A stored span's id in a new trace: another span, which must leave the stored one as it was.
REUSED_SPAN_ID = json.loads(json.dumps(VALID_REQUEST))
REUSED_SPAN_ID["resourceSpans"][0]["scopeSpans"][0]["spans"][0].update(
    traceId="ff" * 16, spanId=STORED_SPANS[0]
)


class Harness:
    """The route on one database, with five spans stored before any fuzzing."""

    def __init__(self, route) -> None:
        self.send, self.engine, self.org_id = route
        status, _, _ = self.send(sample("genai.pb"), PROTOBUF)
        assert status == 200
        self.before = self.rows()
        assert len(self.before) == 5

    def rows(self, *where) -> list[dict]:
        with self.engine.connect() as conn:
            found = conn.execute(select(spans).where(spans.c.org_id == self.org_id, *where))
            return [dict(r) for r in found.mappings()]

    def names(self) -> dict[str, str]:
        """span id -> name of every stored span."""
        with self.engine.connect() as conn:
            return dict(conn.execute(select(spans.c.span_id, spans.c.name)).all())

    def count(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(spans)).scalar()

    def check(self, body: bytes, kind: str, sent: int | None, **headers: str) -> tuple[int, str]:
        """Send; assert the answer is well formed and nothing stored was harmed. Returns the
        status and the answer's message (the partial success's, if any)."""
        count = self.count()
        status, reply_headers, reply = self.send(body, kind, **headers)
        assert status in ANSWERS, (status, reply[:300])
        assert reply_headers["content-type"] == kind
        new = self.count() - count
        if status == 200:
            response = ExportTraceServiceResponse()
            if kind == JSON:
                json_format.Parse(reply, response)
            else:
                response.ParseFromString(reply)
            rejected = response.partial_success.rejected_spans
            message = response.partial_success.error_message
            assert bool(rejected) == bool(message)
            if sent is not None:
                assert new + rejected <= sent
        else:
            message = (
                json.loads(reply)["message"]
                if kind == JSON
                else status_pb2.Status.FromString(reply).message
            )
            assert message and "Traceback" not in message
            assert new == 0  # a refused request stores nothing
        # keyed by trace and span id: a fuzzed span may reuse a stored span's id in another trace
        stored = self.rows(spans.c.span_id.in_(STORED_SPANS))
        original = {(r["trace_id"], r["span_id"]): r for r in stored}
        assert [original[r["trace_id"], r["span_id"]] for r in self.before] == self.before
        return status, message

    def finish(self) -> None:
        assert not [r for r in self.rows() if "\x00" in repr(r)]
        assert_rollups_match_rebuild(self.engine)


def test_fuzzed_otlp_json_shapes_always_get_an_answer(route):
    harness = Harness(route)
    stored_some = []

    @FUZZ
    @given(doc=requests, gzipped=st.booleans())
    @example(doc=VALID_REQUEST, gzipped=False)
    @example(doc=REUSED_SPAN_ID, gzipped=False)
    def check(doc, gzipped):
        body = json.dumps(doc).encode()
        extra = {"content-encoding": "gzip"} if gzipped else {}
        before = harness.count()
        status, message = harness.check(
            gzip.compress(body) if gzipped else body, JSON, span_count(doc), **extra
        )
        if outline_ok(doc):  # bad spans cost only themselves, never the request
            assert status == 200, message
        stored_some.append(harness.count() > before)
        try:  # the same request as protobuf, when the whole of it is valid OTLP
            message = json_format.ParseDict(doc, ExportTraceServiceRequest())
        except Exception:
            return
        assert harness.check(message.SerializeToString(), PROTOBUF, span_count(doc))[0] == 200

    check()
    # the fuzzing reached the database, not only the parser (a quarter of the requests do; the
    # explicit example always does)
    assert sum(stored_some) >= 1
    harness.finish()


ids = itertools.count(1)


def test_clean_spans_are_all_stored_beside_any_mix_of_bad_ones(route):
    """The exact property: every clean span stored (NUL as U+FFFD), every poisoned one
    refused and counted, whatever the mix and the encoding."""
    harness = Harness(route)

    @FUZZ
    @given(
        spans=st.lists(
            st.tuples(clean_spans, st.none() | st.sampled_from(sorted(POISONS))),
            min_size=1,
            max_size=6,
        ),
        gzipped=st.booleans(),
    )
    def check(spans, gzipped):
        docs, expected = [], []
        for doc, poison in spans:
            n = next(ids)
            doc = dict(
                doc,
                traceId=f"{n:032x}",
                spanId=f"{n:016x}",
                startTimeUnixNano=str(T0 + n),
                endTimeUnixNano=str(T0 + n + 10**6),
            )
            docs.append({**doc, **POISONS[poison]} if poison else doc)
            if poison is None:
                expected.append((f"{n:016x}", doc["name"].replace("\x00", "\ufffd") or "(unnamed)"))
        body = json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": docs}]}]}).encode()
        extra = {"content-encoding": "gzip"} if gzipped else {}
        before = harness.names()
        status, message = harness.check(
            gzip.compress(body) if gzipped else body, JSON, len(docs), **extra
        )
        assert status == 200
        refused = len(docs) - len(expected)
        assert message.startswith(f"{refused} span(s) rejected") if refused else not message, (
            message
        )
        new = {(k, v) for k, v in harness.names().items() if k not in before}
        assert new == set(expected)

    check()
    harness.finish()


def test_fuzzed_bytes_always_get_an_answer(route):
    harness = Harness(route)
    valid = sample("genai.pb")

    @FUZZ
    @given(
        body=st.binary(max_size=300)
        | st.builds(
            lambda cut, junk: valid[:cut] + junk, st.integers(0, len(valid)), st.binary(max_size=20)
        ),
        kind=st.sampled_from([JSON, PROTOBUF]),
        encoding=st.sampled_from([None, "gzip", "br", "GZIP "]),
    )
    def check(body, kind, encoding):
        extra = {"content-encoding": encoding} if encoding else {}
        harness.check(body, kind, None, **extra)

    check()
    harness.finish()


def deep_attribute(depth: int) -> bytes:
    """A span whose attribute is an array in an array ... `depth` times, and a plain span."""
    value = nested(depth, b'{"arrayValue": {"values": [', b"]}}")
    value = value.replace(b"[]", b'[{"stringValue": "bottom"}]')
    span = (
        b'{"traceId": "%s", "spanId": "%s", "name": "%s", "startTimeUnixNano": "%d", '
        b'"endTimeUnixNano": "%d", "attributes": [{"key": "deep", "value": %s}]}'
    )
    deep = span % (b"ab" * 16, b"cd" * 8, b"deep", T0, T0 + 1000, value)
    shallow = span % (b"ab" * 16, b"ce" * 8, b"shallow", T0, T0 + 1000, b'{"intValue": 1}')
    return b'{"resourceSpans": [{"scopeSpans": [{"spans": [%s, %s]}]}]}' % (deep, shallow)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (nested(100_000, b"[", b"]"), "nested too deeply"),
        (b'{"resourceSpans": ' + nested(100_000, b"[", b"]") + b"}", "nested too deeply"),
        (nested(50_000, b'{"a":', b"}").replace(b":}", b":1}", 1), "nested too deeply"),
        (deep_attribute(5000), "nested too deeply"),
        (b'{"resourceSpans": [{"scopeSpans": 5}]}', "scopeSpans must be a list"),
        (b'{"resourceSpans": [{"scopeSpans": [7]}]}', "scopeSpans[0] must be an object"),
        (b"\xff\xfe not utf-8", "not valid JSON"),
    ],
)
def test_deep_or_malformed_json_is_a_400(route, body, message):
    harness = Harness(route)
    status, answer = harness.check(body, JSON, 0)
    assert status == 400 and message in answer


@pytest.mark.parametrize(("depth", "kept"), [(30, True), (150, False)])
def test_a_deeply_nested_attribute_costs_at_most_its_span(route, depth, kept):
    """Nested past 16 levels, the rest of the value is cut to a marker; nested past what
    OTLP/JSON parsing allows (about 50), the span is refused alone."""
    harness = Harness(route)
    status, message = harness.check(deep_attribute(depth), JSON, 2)
    stored = {r["name"]: r for r in harness.rows()}
    assert status == 200 and "shallow" in stored and ("deep" in stored) == kept
    if kept:
        assert "(nested too deeply)" in json.dumps(stored["deep"]["attributes"])
        assert stored["deep"]["attributes"]["observatory.cut_attributes"] == ["deep"]
    else:
        assert message.startswith("1 span(s) rejected: span 'deep' (cdcdcdcdcdcdcdcd)")
    harness.finish()


def test_a_body_over_the_limit_is_read_to_its_end_and_answered_413(route):
    """Chunked, without a Content-Length: the route reads (and drops) all of it before it
    answers, so a client that sends everything first is not cut off."""
    harness = Harness(route)
    chunks = [b"x" * 65536] * 40  # 2.5 MiB against the route's 1 MiB limit
    headers = {"content-type": JSON, "authorization": "Bearer unused"}
    status, _, reply = call_route(headers, chunks)
    assert status == 413 and "over 1 MiB" in json.loads(reply)["message"]
    assert chunks == []  # every chunk was read
    assert harness.count() == 5
