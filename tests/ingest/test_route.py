"""The route's answers when the writer is full, the server is stopping or the database is down:
429/503 with Retry-After, as OTLP exporters expect in order to retry."""

from __future__ import annotations

from concurrent.futures import Future
from contextlib import contextmanager

import pytest
from google.rpc import status_pb2
from sqlalchemy.exc import OperationalError
from starlette.requests import Request

from observatory_core.accounts import keyguard
from observatory_core.api import otlp_route
from observatory_core.ingest.receiver import Receiver
from observatory_core.ingest.writer import BatchWriter, Overloaded, ShuttingDown
from tests.helpers import run_coroutine
from tests.ingest.conftest import PROTOBUF, sample


class StubWriter:
    def __init__(self, outcome):
        self.outcome = outcome

    @contextmanager
    def arriving(self):
        yield self

    def refused(self):
        pass

    def submit(self, rows):
        if isinstance(self.outcome, type) and issubclass(self.outcome, Exception):
            raise self.outcome
        future: Future = Future()
        future.set_exception(self.outcome)
        return future


def call(key: str, body: bytes) -> tuple[int, dict, bytes]:
    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/traces",
        "headers": [
            (b"content-type", PROTOBUF.encode()),
            (b"authorization", f"Bearer {key}".encode()),
            (b"content-length", str(len(body)).encode()),
        ],
    }
    response = run_coroutine(otlp_route.otlp_traces(Request(scope, receive)))
    return response.status_code, dict(response.headers), response.body


@pytest.mark.parametrize(
    ("outcome", "status", "retry"),
    [
        (Overloaded, 429, "1"),
        (ShuttingDown, 503, "5"),
        (OperationalError("INSERT", {}, Exception("server closed the connection")), 503, "5"),
        (ValueError('null value in column "operation"'), 400, None),
    ],
)
def test_overload_and_outages_ask_the_exporter_to_retry(
    org_key, monkeypatch, outcome, status, retry
):
    engine, _, _, key = org_key
    monkeypatch.setattr(
        otlp_route, "get_ingest", lambda _s: (Receiver(engine), StubWriter(outcome))
    )
    got, headers, body = call(key, sample("genai.pb"))
    assert (got, headers.get("retry-after")) == (status, retry)
    assert status_pb2.Status.FromString(body).message  # always a message, never a traceback


@pytest.mark.parametrize("bad_key", [True, False], ids=["a bad key", "no rows"])
def test_a_refused_request_is_not_waited_for_while_its_refusal_is_recorded(
    org_key, monkeypatch, bad_key
):
    """A request refused (a bad key; one with no span) stops holding the writer's
    group before its bookkeeping reads the database (bad keys, rejection counts): else each
    such request held every group up to `LINGER_S`."""
    engine, _, _, key = org_key
    writer = BatchWriter(engine)
    monkeypatch.setattr(otlp_route, "get_ingest", lambda _s: (Receiver(engine), writer))
    arriving: list[int] = []
    real_count = otlp_route._count_rejections

    async def count(*args):
        arriving.append(writer._arriving)
        return await real_count(*args)

    monkeypatch.setattr(otlp_route, "_count_rejections", count)
    real_failed = keyguard.guard.failed

    def failed(*args):
        arriving.append(writer._arriving)
        return real_failed(*args)

    monkeypatch.setattr(keyguard.guard, "failed", failed)
    try:
        if bad_key:
            got, _, _ = call("obs_not_a_key", sample("genai.pb"))
        else:
            got, _, _ = call(key, b"")
    finally:
        writer.stop()
    assert (got, arriving) == ((401, [0]) if bad_key else (200, [0]))
