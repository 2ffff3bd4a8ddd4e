"""The calls of the three `openai`-client conformance scripts, with a hook per user."""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import AbstractContextManager

import common
from openai import OpenAI


def run(
    as_user: Callable[[tuple[str, str]], AbstractContextManager], send_user: bool = False
) -> None:
    """Alice: a chat and a streamed chat. Bob: a tool call and its answer, an embedding, a 429 and
    a 500. `as_user` sets user and session the library's way; `send_user` also passes OpenAI's
    own `user` request field."""
    client = OpenAI(base_url=common.API, api_key="sk-conformance", max_retries=0, timeout=20)
    model = common.CHAT_MODEL

    def extra(who):
        return {"user": who[0]} if send_user else {}

    with as_user(common.ALICE):
        client.chat.completions.create(
            model=model,
            messages=[
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": common.QUESTION},
            ],
            **extra(common.ALICE),
        )
        stream = client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": common.STREAM_QUESTION}],
            stream=True,
            stream_options={"include_usage": True},
            **extra(common.ALICE),
        )
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        assert text == "Bonjour from Paris.", text
    with as_user(common.BOB):
        messages = [{"role": "user", "content": common.TOOL_QUESTION}]
        first = client.chat.completions.create(
            model=model, messages=messages, tools=[common.WEATHER_TOOL], **extra(common.BOB)
        )
        call = first.choices[0].message.tool_calls[0]
        messages += [
            first.choices[0].message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"sky": "sunny"})},
        ]
        client.chat.completions.create(
            model=model, messages=messages, tools=[common.WEATHER_TOOL], **extra(common.BOB)
        )
        client.embeddings.create(
            model=common.EMBEDDING_MODEL, input=common.EMBED_TEXT, **extra(common.BOB)
        )
        for text, status in ((common.FAIL_429, 429), (common.FAIL_500, 500)):
            common.expect_error(
                lambda t=text: client.chat.completions.create(
                    model=model, messages=[{"role": "user", "content": t}], **extra(common.BOB)
                ),
                status,
            )
