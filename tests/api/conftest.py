"""The API app against each database, with demo data, a read key per role, and a key of
another org: loaded once per database for the folder, and put back after each test changed it
(`tests.restore`)."""

from __future__ import annotations

import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from observatory_core.accounts.permissions import Role
from observatory_core.api import context
from observatory_core.api.app import PREFIX, api_mount
from observatory_core.api.common import cache
from observatory_core.api.ratelimit import RateLimiter
from observatory_core.base.settings import get_settings
from observatory_core.ingest.apikeys import create_key
from observatory_core.storage.engine import get_engine
from tests.helpers import admin_scope, load_small_demo, make_org
from tests.restore import shared

ROLES = ("admin", "developer", "viewer", "billing")


class ApiClient(TestClient):
    """The API mounted where the server mounts it; paths are given relative to /api/v1."""

    def request(self, method, url, *args, **kwargs):
        return super().request(
            method, PREFIX + url if url.startswith("/") else url, *args, **kwargs
        )


def _load(engine) -> dict:
    load_small_demo(engine, spans_count=1500, days=2, seed=5)
    acme, _ = make_org(engine, "acme")
    globex, _ = make_org(engine, "globex")
    keys = {
        role: create_key(engine, admin_scope(acme), f"{role} key", scopes=("read",), role=role)
        for role in ROLES
    }
    keys["ingest-only"] = create_key(engine, admin_scope(acme), "ingest key")
    keys["globex"] = create_key(engine, admin_scope(globex), "other org", scopes=("read",))
    return {"keys": keys, "acme": acme, "globex": globex}


@pytest.fixture(scope="session")
def _api_data() -> dict:
    return {}


@pytest.fixture
def api(db_url, _api_data, monkeypatch, tmp_path):
    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.setenv("OBSERVATORY_EXPORT_DIR", str(tmp_path / "exports"))
    get_settings.cache_clear()
    monkeypatch.setattr(context, "limiter", RateLimiter())
    cache._items.clear()
    data = shared(_api_data, db_url, _load)  # put back what the last test changed
    engine = get_engine(db_url)
    assert data.engine is engine
    client = ApiClient(Starlette(routes=[api_mount()]))
    yield {"client": client, "engine": engine, **data.loaded}
    get_settings.cache_clear()


def auth(api, who: str = "developer") -> dict[str, str]:
    return {"authorization": f"Bearer {api['keys'][who]}"}


def scope_of(api, role: str = "developer", org: str = "acme"):
    from observatory_core.accounts.scope import Scope

    return Scope(org_id=api[org], role=Role(role))
