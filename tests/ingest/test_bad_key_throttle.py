"""`POST /v1/traces`: bad keys from one address are slowed, then refused with 429 and
Retry-After, before the body is read; the counts are the database's, the clock injected."""

from __future__ import annotations

from datetime import timedelta

from starlette.requests import Request

from observatory_core.accounts import keyguard
from observatory_core.api import otlp_route
from observatory_core.ingest.receiver import Receiver
from tests.helpers import END, run_coroutine
from tests.ingest.conftest import PROTOBUF, sample
from tests.ingest.test_route import StubWriter


def call(key: str, address: str) -> tuple[int, dict]:
    body = sample("genai.pb")

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/traces",
        "client": (address, 40000),
        "headers": [
            (b"content-type", PROTOBUF.encode()),
            (b"authorization", f"Bearer {key}".encode()),
            (b"content-length", str(len(body)).encode()),
        ],
    }
    response = run_coroutine(otlp_route.otlp_traces(Request(scope, receive)))
    return response.status_code, dict(response.headers)


def test_bad_keys_from_one_address_are_slowed_then_refused(org_key, monkeypatch):
    engine, _, _, key = org_key
    clock = {"now": END}
    monkeypatch.setattr(keyguard, "guard", keyguard.KeyGuard(clock=lambda: clock["now"]))
    monkeypatch.setattr(otlp_route, "get_ingest", lambda _s: (Receiver(engine), StubWriter(None)))
    assert [call(f"obs_guess{i}", "10.0.0.5")[0] for i in range(6)] == [401] * 6
    status, headers = call("obs_guess6", "10.0.0.5")
    assert (status, headers["retry-after"]) == (429, "1")
    assert call(key, "10.0.0.5")[0] == 429  # even a valid key waits: no guessing meanwhile
    assert call("obs_guess7", "10.0.0.6")[0] == 401  # another address is not affected
    clock["now"] += timedelta(seconds=1)
    assert call("obs_guess8", "10.0.0.5")[0] == 401
