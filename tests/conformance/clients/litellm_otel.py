"""LiteLLM with its own OpenTelemetry callback ("otel"), configured by the environment the way
LiteLLM documents (OTEL_EXPORTER, OTEL_ENDPOINT, OTEL_HEADERS), against the fake API as an
OpenAI-compatible base URL. The user goes in the request's `user` field; LiteLLM has no session
attribute (the session is passed as metadata and kept in attributes)."""

import json
import os
import time

os.environ.update(
    {
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "OTEL_EXPORTER": "otlp_http",
        "OTEL_ENDPOINT": os.environ["CONFORMANCE_OTLP"],
        "OTEL_HEADERS": f"Authorization=Bearer {os.environ['CONFORMANCE_KEY']}",
    }
)

import common  # noqa: E402
import litellm  # noqa: E402
from litellm.litellm_core_utils.thread_pool_executor import executor  # noqa: E402
from opentelemetry import trace  # noqa: E402

litellm.callbacks = ["otel"]
MODEL = "openai/" + common.CHAT_MODEL
KW = {"api_base": common.API, "api_key": "sk-conformance", "num_retries": 0, "max_retries": 0}


def ask(who, **kw):
    return litellm.completion(model=MODEL, user=who[0], metadata={"session_id": who[1]}, **KW, **kw)


ask(
    common.ALICE,
    messages=[
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": common.QUESTION},
    ],
)
stream = ask(
    common.ALICE,
    messages=[{"role": "user", "content": common.STREAM_QUESTION}],
    stream=True,
    stream_options={"include_usage": True},
)
text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
assert text == "Bonjour from Paris.", text
messages = [{"role": "user", "content": common.TOOL_QUESTION}]
first = ask(common.BOB, messages=messages, tools=[common.WEATHER_TOOL])
call = first.choices[0].message.tool_calls[0]
messages += [
    first.choices[0].message.model_dump(exclude_none=True),
    {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"sky": "sunny"})},
]
ask(common.BOB, messages=messages, tools=[common.WEATHER_TOOL])
litellm.embedding(
    model="openai/" + common.EMBEDDING_MODEL,
    input=[common.EMBED_TEXT],
    user=common.BOB[0],
    metadata={"session_id": common.BOB[1]},
    **KW,
)
for content, status in ((common.FAIL_429, 429), (common.FAIL_500, 500)):
    common.expect_error(
        lambda c=content: ask(common.BOB, messages=[{"role": "user", "content": c}]), status
    )
# LiteLLM logs from its background executor after a call returns: let it finish first.
executor.shutdown(wait=True)
time.sleep(0.5)
common.done(trace.get_tracer_provider())
