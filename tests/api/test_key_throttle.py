"""Repeated bad API keys from one address are slowed down, then refused for a while (429 with
Retry-After); the counts are in the database, the clock is injected."""

from __future__ import annotations

from datetime import timedelta

import pytest
from starlette.applications import Starlette

from observatory_core.accounts import keyguard
from observatory_core.api import context
from observatory_core.api.app import api_mount
from observatory_core.api.ratelimit import RateLimiter
from observatory_core.base.settings import get_settings
from observatory_core.ingest.apikeys import create_key
from tests.api.conftest import ApiClient
from tests.helpers import END, admin_scope, make_org


@pytest.fixture
def guarded(engine, db_url, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", db_url)
    get_settings.cache_clear()
    monkeypatch.setattr(context, "limiter", RateLimiter())
    clock = {"now": END}
    monkeypatch.setattr(keyguard, "guard", keyguard.KeyGuard(clock=lambda: clock["now"]))
    org_id, _ = make_org(engine, "acme")
    key = create_key(engine, admin_scope(org_id), "good", scopes=("read",))
    client = ApiClient(Starlette(routes=[api_mount()]))
    yield client, key, clock
    get_settings.cache_clear()


def _bad(client, n: int = 0):
    return client.get("/export/jobs", headers={"authorization": f"Bearer obs_guess{n}"})


def test_bad_keys_are_slowed_then_locked_and_a_good_key_waits_too(guarded):
    client, key, clock = guarded
    assert [_bad(client, i).status_code for i in range(6)] == [401] * 6  # 5 free, then 1 s
    slowed = _bad(client, 6)
    assert slowed.status_code == 429 and slowed.headers["retry-after"] == "1"
    assert slowed.json()["error"]["code"] == "rate_limited"
    assert "retry in 1 s" in slowed.json()["error"]["message"]
    clock["now"] += timedelta(seconds=1)
    assert _bad(client, 7).status_code == 401  # 7th failure: 2 s
    assert _bad(client, 8).headers["retry-after"] == "2"
    for i in range(8, 21):  # past each growing delay, up to the 20th failure
        clock["now"] += timedelta(seconds=31)
        assert _bad(client, i).status_code == 401
    locked = _bad(client, 99)
    assert locked.status_code == 429 and locked.headers["retry-after"] == "300"
    assert "refused for 300 s" in locked.json()["error"]["message"]
    good = {"authorization": f"Bearer {key}"}
    assert client.get("/export/jobs", headers=good).status_code == 429  # no guessing meanwhile
    clock["now"] += timedelta(minutes=5)
    assert client.get("/export/jobs", headers=good).status_code == 200
    assert _bad(client, 100).status_code == 401  # a new streak


def test_a_missing_key_is_not_counted(guarded):
    client, _, _ = guarded
    assert [client.get("/export/jobs").status_code for _ in range(8)] == [401] * 8
