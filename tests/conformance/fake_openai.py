"""A fake OpenAI-compatible API on 127.0.0.1 for the conformance clients.

Deterministic: every answer and its token counts are fixed by what was asked, so the tests
assert exact numbers. Each client calls it under its own prefix (`/<client>/v1/...`), and the
server keeps a log of every call it answered, per client: the independent count the stored
spans and figures are checked against.

What a call gets is chosen by the last user message, so the model name stays a real, priced one:
- contains FAIL_429 / FAIL_500: that HTTP error, with OpenAI's error body;
- the request offers tools and no tool result was sent yet: a `get_weather` tool call;
- the request carries a tool result: the final answer;
- otherwise: the plain answer (streamed when `stream` is true, the first chunk ~150 ms late,
  and a usage chunk at the end when `stream_options.include_usage` is true).
"""

from __future__ import annotations

import base64
import json
import struct
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FAIL_429 = "FAIL_429"
FAIL_500 = "FAIL_500"
RATE_LIMIT_MESSAGE = "Rate limit reached for requests (conformance fake)"
SERVER_ERROR_MESSAGE = "The server had an error while processing your request (conformance fake)"
FIRST_CHUNK_DELAY_S = 0.15

CHAT_REPLY = "Paris is the capital of France."
STREAM_PIECES = ("Bonjour", " from", " Paris.")
STREAM_REPLY = "".join(STREAM_PIECES)
TOOL_ARGUMENTS = '{"city": "Paris"}'
TOOL_REPLY = "It is sunny in Paris."

# Token counts per kind of answer: (prompt, completion).
USAGE = {
    "chat": (23, 7),
    "stream": (19, 5),
    "tool_call": (41, 12),
    "tool_answer": (57, 9),
}
EMBEDDING_TOKENS = 8  # per input
EMBEDDING_DIMENSIONS = 8


@dataclass
class Call:
    """One answered request, as the client saw it."""

    client: str
    endpoint: str  # "chat" or "embeddings"
    model: str
    kind: str  # chat, stream, tool_call, tool_answer, embedding, 429, 500
    status: int
    prompt_tokens: int = 0
    completion_tokens: int = 0
    user: str | None = None


@dataclass
class CallLog:
    calls: list[Call] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, call: Call) -> None:
        with self.lock:
            self.calls.append(call)

    def of(self, client: str) -> list[Call]:
        with self.lock:
            return [c for c in self.calls if c.client == client]


def _text(content) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def _kind(body: dict) -> str:
    messages = body.get("messages") or []
    users = [m for m in messages if m.get("role") == "user"]
    last = _text(users[-1].get("content")) if users else ""
    if FAIL_429 in last:
        return "429"
    if FAIL_500 in last:
        return "500"
    if any(m.get("role") == "tool" for m in messages):
        return "tool_answer"
    if body.get("tools"):
        return "tool_call"
    return "stream" if body.get("stream") else "chat"


def _completion(model: str, kind: str, created: int) -> dict:
    prompt, completion = USAGE[kind]
    message: dict = {
        "role": "assistant",
        "content": TOOL_REPLY if kind == "tool_answer" else CHAT_REPLY,
    }
    finish = "stop"
    if kind == "tool_call":
        message = {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_weather_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": TOOL_ARGUMENTS},
                }
            ],
        }
        finish = "tool_calls"
    return {
        "id": f"chatcmpl-fake-{kind}",
        "object": "chat.completion",
        "created": created,
        "model": model,
        "system_fingerprint": "fp_conformance",
        "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
    }


class _Handler(BaseHTTPRequestHandler):
    server_version = "FakeOpenAI/1.0"
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # quiet
        pass

    def _send_json(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-request-id", "req_conformance")
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._send_json(404, {"error": {"message": "not found", "type": "invalid_request_error"}})

    def do_POST(self) -> None:
        parts = self.path.split("?")[0].strip("/").split("/")
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            self._send_json(
                400, {"error": {"message": "bad json", "type": "invalid_request_error"}}
            )
            return
        if len(parts) < 3 or parts[1] != "v1":
            self._send_json(404, {"error": {"message": "use /<client>/v1/...", "type": "x"}})
            return
        client, endpoint = parts[0], "/".join(parts[2:])
        log: CallLog = self.server.log  # type: ignore[attr-defined]
        model = str(body.get("model", ""))
        user = body.get("user")
        if endpoint == "embeddings":
            self._embeddings(client, body, model, user, log)
        elif endpoint == "chat/completions":
            self._chat(client, body, model, user, log)
        else:
            self._send_json(404, {"error": {"message": f"no {endpoint}", "type": "x"}})

    def _embeddings(self, client, body, model, user, log: CallLog) -> None:
        inputs = body.get("input")
        inputs = inputs if isinstance(inputs, list) else [inputs]
        vector = [0.125 * (i + 1) for i in range(EMBEDDING_DIMENSIONS)]
        packed = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        as_base64 = body.get("encoding_format") == "base64"
        tokens = EMBEDDING_TOKENS * len(inputs)
        log.add(Call(client, "embeddings", model, "embedding", 200, tokens, 0, user))
        self._send_json(
            200,
            {
                "object": "list",
                "model": model,
                "data": [
                    {
                        "object": "embedding",
                        "index": i,
                        "embedding": packed if as_base64 else vector,
                    }
                    for i in range(len(inputs))
                ],
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            },
        )

    def _chat(self, client, body, model, user, log: CallLog) -> None:
        kind = _kind(body)
        if kind in ("429", "500"):
            status = int(kind)
            log.add(Call(client, "chat", model, kind, status, user=user))
            error = (
                {
                    "message": RATE_LIMIT_MESSAGE,
                    "type": "rate_limit_error",
                    "code": "rate_limit_exceeded",
                }
                if status == 429
                else {"message": SERVER_ERROR_MESSAGE, "type": "server_error", "code": None}
            )
            self._send_json(status, {"error": {**error, "param": None}})
            return
        prompt, completion = USAGE[kind]
        log.add(Call(client, "chat", model, kind, 200, prompt, completion, user))
        created = int(time.time())
        if kind != "stream":
            self._send_json(200, _completion(model, kind, created))
            return
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        base = {
            "id": "chatcmpl-fake-stream",
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": "fp_conformance",
        }
        chunks = [
            {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}
        ]
        chunks += [
            {**base, "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
            for piece in STREAM_PIECES
        ]
        chunks.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        if include_usage:
            usage = {"prompt_tokens": prompt, "completion_tokens": completion}
            usage["total_tokens"] = prompt + completion
            chunks.append({**base, "choices": [], "usage": usage})
        time.sleep(FIRST_CHUNK_DELAY_S)
        for chunk in chunks:
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            self.wfile.flush()
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()


class FakeOpenAI:
    """The server on a free 127.0.0.1 port, in a daemon thread; `stop()` ends it."""

    def __init__(self) -> None:
        self.log = CallLog()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.log = self.log  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def base_url(self, client: str) -> str:
        return f"http://127.0.0.1:{self.port}/{client}/v1"

    def start(self) -> FakeOpenAI:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
