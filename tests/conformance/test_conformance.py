"""Six real instrumentations against the real receiver, on both stores: what a user sees per
span, the span tree, and the figures built on them, each checked against the fake API's own log
of the calls the client made (an independent count).

Every client makes the same calls (tests/conformance/clients/common.py): alice a chat and a
streamed chat; bob a tool call, its answer, an embedding, a 429 and a 500. What a library does
not send at all is declared per library below (and in docs/ingestion.md), so a test fails the
day a library starts sending it, or stops.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import genai_prices
import pytest

from observatory_core.filters.spec import FilterSpec
from observatory_core.metrics.engine import run_metrics
from observatory_core.metrics.query import MetricQuery
from tests.conformance import fake_openai as fake
from tests.conformance.conftest import CLIENTS, api_rows, calls, stored
from tests.helpers import admin_scope

ALICE, BOB = "user-alice", "user-bob"
SESSIONS = {ALICE: "session-alice", BOB: "session-bob"}
QUESTIONS = {
    "chat": "What is the capital of France?",
    "stream": "Say hello from Paris.",
    "tool_call": "What is the weather in Paris?",
    "tool_answer": "What is the weather in Paris?",
    "embedding": "The capital of France",
    "429": "Please answer FAIL_429",
    "500": "Please answer FAIL_500",
}
REPLIES = {
    "chat": fake.CHAT_REPLY,
    "stream": fake.STREAM_REPLY,
    "tool_call": '[tool call get_weather: {"city": "Paris"}]',
    "tool_answer": fake.TOOL_REPLY,
}
FINISH = {"chat": "stop", "stream": "stop", "tool_call": "tool_calls", "tool_answer": "stop"}
ERRORS = {"429": fake.RATE_LIMIT_MESSAGE, "500": fake.SERVER_ERROR_MESSAGE}


@dataclass(frozen=True)
class Library:
    """What one library sends; every gap here is listed in docs/ingestion.md."""

    llm_span_names: tuple[str, ...]  # the names of its LLM-call spans
    sessions: bool = True  # False: it has no session attribute at all
    untraced: frozenset[str] = frozenset()  # kinds of call that make no span
    finish: dict[str, str | None] = field(default_factory=dict)  # its own finish reasons
    no_text: frozenset[str] = frozenset()  # calls whose text it does not send
    error_type: dict[str, str] = field(default_factory=dict)
    output: dict[str, str] = field(default_factory=dict)  # its own readable output, if not ours
    no_provider: frozenset[str] = frozenset()  # calls whose provider it does not send
    ttft: bool = False  # whether a stream's time to first token arrives


LIBRARIES = {
    "openinference-openai": Library(
        ("ChatCompletion", "CreateEmbeddings"),
        ttft=True,  # from its "First Token Stream Event"
        # its embedding span's only text is the raw request and response JSON
        no_text=frozenset({"embedding"}),
        error_type={"429": "openai.RateLimitError", "500": "openai.InternalServerError"},
    ),
    "openllmetry-openai": Library(
        ("openai.chat", "openai.embeddings"),
        ttft=True,  # from its first "gen_ai.content.completion.chunk" event
        finish={"tool_call": "tool_call"},
        error_type={"429": "RateLimitError", "500": "InternalServerError"},
    ),
    "otel-genai-openai": Library(
        ("chat gpt-4o-mini", "embeddings text-embedding-3-small"),
        finish={"stream": None},  # a streamed answer's finish reason is not recorded
        no_text=frozenset({"embedding"}),
        error_type={
            "429": "<class 'openai.RateLimitError'>",
            "500": "<class 'openai.InternalServerError'>",
        },
    ),
    "openinference-langchain": Library(
        ("ChatOpenAI",),
        untraced=frozenset({"embedding"}),  # LangChain has no callbacks for embeddings
        error_type={
            "429": "langchain_openai.chat_models.base.OpenAIRateLimitError",
            "500": "langchain_openai.chat_models.base.OpenAIAPIError",
        },
    ),
    "litellm-otel": Library(
        ("litellm_request",),
        sessions=False,
        no_provider=frozenset({"embedding"}),
        error_type={"429": "RateLimitError", "500": "InternalServerError"},
    ),
    "vercel-ai": Library(
        ("ai.generateText.doGenerate", "ai.streamText.doStream", "ai.embed.doEmbed"),
        ttft=True,
        finish={"tool_call": "tool-calls"},
        no_text=frozenset({"embedding"}),
        error_type={"429": "AI_APICallError", "500": "AI_APICallError"},
    ),
}
assert set(LIBRARIES) == set(CLIENTS)


def reference_cost(model: str, tokens_in: int, tokens_out: int) -> float:
    """Straight from the maintained price table, not through our price cache."""
    price = genai_prices.calc_price(
        genai_prices.Usage(input_tokens=tokens_in, output_tokens=tokens_out),
        model,
        provider_id="openai",
    )
    return float(price.total_price)


def user_of(call) -> str:
    """Alice makes the chat and the streamed chat; bob everything else."""
    return ALICE if call.kind in ("chat", "stream") else BOB


def traced_calls(run, client: str):
    made = calls(run, client)
    assert [c.kind for c in made] == ["chat", "stream", "tool_call", "tool_answer"] + [
        "embedding",
        "429",
        "500",
    ], "the client did not make the calls it should"
    return [c for c in made if c.kind not in LIBRARIES[client].untraced]


def llm_spans(rows, client: str):
    names = LIBRARIES[client].llm_span_names
    return sorted((r for r in rows if r["name"] in names), key=lambda r: r["start_time"])


@pytest.fixture(params=list(CLIENTS))
def client(request):
    return request.param


def test_every_call_is_one_span_with_what_the_user_sees(conformance, client):
    lib = LIBRARIES[client]
    rows = stored(conformance, client)
    made = traced_calls(conformance, client)
    spans = llm_spans(rows, client)
    assert len(spans) == len(made), [r["name"] for r in rows]
    if "embedding" in lib.untraced:  # the day the library traces them, this says so
        assert not [r for r in rows if r["operation"] == "embeddings"]
    for call, span in zip(made, spans, strict=True):
        what = f"{client} {call.kind} span {span['name']}"
        failed = call.kind in ERRORS
        assert span["operation"] == ("embeddings" if call.kind == "embedding" else "chat"), what
        provider = None if call.kind in lib.no_provider else "openai"
        assert (span["provider"], span["model"]) == (provider, call.model), what
        assert (span["input_tokens"], span["output_tokens"]) == (
            call.prompt_tokens,
            call.completion_tokens,
        ), what
        assert span["total_cost_usd"] == pytest.approx(
            reference_cost(call.model, call.prompt_tokens, call.completion_tokens)
        ), what
        assert span["cost_source"] == "computed", what
        assert (span["status"] == "error") == failed, what
        if failed:
            assert ERRORS[call.kind] in span["error_message"], what
            assert span["error_type"] == lib.error_type[call.kind], what
        else:
            assert span["error_message"] is None, what
        finish = None if failed else lib.finish.get(call.kind, FINISH.get(call.kind))
        assert span["finish_reason"] == finish, what
        user = user_of(call)
        assert span["user_id"] == user, what
        assert span["session_id"] == (SESSIONS[user] if lib.sessions else None), what
        if call.kind == "stream" and lib.ttft:  # the fake API holds the first chunk back
            assert span["ttft_ms"] >= fake.FIRST_CHUNK_DELAY_S * 1000, what
        else:
            assert span["ttft_ms"] is None, what
        if call.kind in lib.no_text:
            continue
        assert QUESTIONS[call.kind] in (span["input_text"] or ""), what
        if call.kind in REPLIES:
            assert span["output_text"] == lib.output.get(call.kind, REPLIES[call.kind]), what


def test_messages_keep_their_roles(conformance, client):
    """A conversation reads as 'role: text' lines, tool calls and results included."""
    spans = llm_spans(stored(conformance, client), client)
    by_input = {s["input_text"]: s for s in spans}
    assert "system: You are terse.\nuser: What is the capital of France?" in by_input
    answer = next(s for s in spans if s["output_text"] == fake.TOOL_REPLY)
    lines = answer["input_text"].splitlines()
    assert lines[0] == "user: What is the weather in Paris?"
    assert lines[1].startswith("assistant:")
    if client != "litellm-otel":  # LiteLLM's assistant message keeps its tool call unreadable
        assert lines[1] == 'assistant: [tool call get_weather: {"city": "Paris"}]'
    assert "sunny" in lines[-1]


def _tree(rows):
    by_id = {r["span_id"]: r for r in rows}
    children = defaultdict(list)
    for r in sorted(rows, key=lambda r: r["start_time"]):
        if r["parent_span_id"]:
            assert r["parent_span_id"] in by_id, f"{r['name']} has a parent that was not stored"
            assert by_id[r["parent_span_id"]]["trace_id"] == r["trace_id"]
            children[r["parent_span_id"]].append(r)
    return children


def test_the_span_tree(conformance, client):
    rows = stored(conformance, client)
    children = _tree(rows)
    roots = [r for r in rows if r["parent_span_id"] is None]
    names = sorted(r["name"] for r in roots)
    if client in ("openinference-openai", "openllmetry-openai", "otel-genai-openai"):
        assert len(roots) == len(rows) == 7  # a client call is its own trace
    elif client == "openinference-langchain":
        chain = next(r for r in roots if r["name"] == "RunnableSequence")
        assert [c["name"] for c in children[chain["span_id"]]] == [
            "ChatPromptTemplate",
            "ChatOpenAI",
            "StrOutputParser",
        ]
        agent = next(r for r in roots if r["name"] == "weather_agent")
        steps = children[agent["span_id"]]
        assert [(c["name"], c["operation"]) for c in steps] == [
            ("ChatOpenAI", "chat"),
            ("get_weather", "execute_tool"),
            ("ChatOpenAI", "chat"),
        ]
        assert steps[1]["input_text"] == "Paris"
        assert (agent["operation"], agent["output_text"]) == ("invoke_agent", fake.TOOL_REPLY)
        assert names.count("ChatOpenAI") == 3  # the streamed call and the two failures
    elif client == "litellm-otel":
        assert names == ["litellm_request"] * 7
        for root in roots:
            if root["status"] != "error":
                kids = children[root["span_id"]]
                assert [k["name"] for k in kids] == ["raw_gen_ai_request"]
                assert (kids[0]["operation"], kids[0]["input_tokens"]) == ("other", 0)
    else:  # vercel-ai: ai.generateText > doGenerate (and ai.toolCall), ai.embed > doEmbed
        assert names == ["ai.embed", "ai.generateText", "ai.generateText"] + [
            "ai.generateText",
            "ai.generateText",
            "ai.streamText",
        ]
        for root in roots:
            kids = [(k["name"], k["operation"]) for k in children[root["span_id"]]]
            assert root["operation"] == "other" and root["input_tokens"] == 0, root["name"]
            if root["name"] == "ai.embed":
                assert kids == [("ai.embed.doEmbed", "embeddings")]
            elif root["name"] == "ai.streamText":
                assert kids == [("ai.streamText.doStream", "chat")]
            elif len(kids) == 3:
                assert (root["input_text"], root["output_text"]) == (
                    QUESTIONS["tool_call"],
                    fake.TOOL_REPLY,
                )
                tool = children[root["span_id"]][1]
                assert (tool["input_text"], tool["output_text"]) == (
                    '{"city":"Paris"}',
                    '{"sky":"sunny","city":"Paris"}',
                )
                assert kids == [
                    ("ai.generateText.doGenerate", "chat"),
                    ("ai.toolCall", "execute_tool"),
                    ("ai.generateText.doGenerate", "chat"),
                ]
            else:
                assert kids == [("ai.generateText.doGenerate", "chat")]
                assert kids and root["status"] == children[root["span_id"]][0]["status"]


def _frame(engine, org_id, **query):
    query = MetricQuery(filters=FilterSpec(relative="24h"), bucket=None, **query)
    return run_metrics(engine, admin_scope(org_id), query).frame


def test_error_rate_per_model_and_cost_by_user(conformance, client):
    """The figures, against the calls the fake API answered."""
    run = conformance["runs"][client]
    rows = stored(conformance, client)
    assert rows
    made = traced_calls(conformance, client)
    chat = [c for c in made if c.endpoint == "chat"]
    frame = _frame(
        conformance["engine"],
        run.org_id,
        series=("request_count.count", "error_rate.avg"),
        group_by=("model",),
    ).filter(model="gpt-4o-mini")
    llm_other = [r for r in rows if r["model"] == "gpt-4o-mini"]
    assert len(llm_other) == len(chat), "only the LLM-call spans carry the model"
    assert frame["request_count.count"].to_list() == [len(chat)]
    errors = sum(c.status >= 400 for c in chat)
    assert frame["error_rate.avg"].to_list() == [pytest.approx(errors / len(chat))]

    expected = defaultdict(float)
    for c in made:
        expected[user_of(c)] += reference_cost(c.model, c.prompt_tokens, c.completion_tokens)
    costs = _frame(
        conformance["engine"], run.org_id, series=("total_cost.sum",), group_by=("user_id",)
    )
    got = dict(zip(costs["user_id"].to_list(), costs["total_cost.sum"].to_list(), strict=True))
    assert got.pop(None, 0) == 0, "cost on spans without a user"
    assert got == {u: pytest.approx(v) for u, v in expected.items()}

    # the same figures through the HTTP API, as a dashboard would read them
    query = "metrics?bucket=none&relative=24h&series=total_cost.sum&group_by=user_id"
    by_api = {r["user_id"]: r["total_cost.sum"] for r in api_rows(conformance, client, query)}
    assert by_api.pop(None, 0) == 0
    assert by_api == {u: pytest.approx(v) for u, v in expected.items()}
    query = "metrics?bucket=none&relative=24h&series=error_rate.avg&group_by=model"
    by_model = {r["model"]: r["error_rate.avg"] for r in api_rows(conformance, client, query)}
    assert by_model["gpt-4o-mini"] == pytest.approx(errors / len(chat))
