"""The role matrix's world: one small dataset per database, made once per test session and
shared by every test_role_matrix_*.py file (see matrix.py)."""

from __future__ import annotations

import uuid

import pytest
from starlette.applications import Starlette

from observatory_core.accounts.permissions import Role
from observatory_core.accounts.scope import Scope
from observatory_core.api import context
from observatory_core.api.app import api_mount
from observatory_core.api.common import cache
from observatory_core.api.ratelimit import RateLimiter
from observatory_core.base.settings import get_settings
from observatory_core.exports.jobs import create_export
from observatory_core.exports.worker import WorkerConfig, work_once
from observatory_core.filters.spec import FilterSpec
from observatory_core.ingest.apikeys import create_key
from observatory_core.storage.engine import get_engine
from observatory_core.storage.migrate import upgrade
from tests.accounts.matrix import ALL, FIELDS, FILTER_VALUES, ROLES, Client, make_rows
from tests.conftest import pg_admin
from tests.helpers import make_org, write


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def matrix_world(request, tmp_path_factory):
    """One database of each kind (its own, so other modules' fixtures never empty it), six
    spans, a read key per role, and finished developer exports: one per restricted field and
    one per restricted filter."""
    tmp = tmp_path_factory.mktemp("matrix")
    if request.param == "sqlite":
        url = f"sqlite:///{tmp / 'observatory.db'}"
    else:
        name = f"obs_matrix_{uuid.uuid4().hex[:10]}"
        pg_admin(f'CREATE DATABASE "{name}"')
        url = request.getfixturevalue("pg_url").rsplit("/", 1)[0] + f"/{name}"
    engine = get_engine(url)
    upgrade(engine)
    org, (project,) = make_org(engine, "acme")
    rows, trace = make_rows(org, project)
    write(engine, rows)
    admin = Scope(org_id=org, role=Role.ADMIN, username="root")
    keys = {
        role: create_key(engine, admin, f"{role} key", scopes=("read",), role=role)
        for role in ROLES
    }
    dev = Scope(org_id=org, role=Role.DEVELOPER, username="dev")
    jobs = {
        ("field", f): create_export(engine, dev, ALL, fields=["span_id", f], fmt="csv")["id"]
        for f in FIELDS
    }
    for filter_name, value in FILTER_VALUES.items():
        spec = FilterSpec.from_query_params({"relative": "all", filter_name: value})
        jobs[("filter", filter_name)] = create_export(engine, dev, spec, fields=["span_id"])["id"]
    config = WorkerConfig(export_dir=tmp / "exports")
    while work_once(engine, config) is not None:
        pass
    yield {
        "url": url,
        "engine": engine,
        "client": Client(Starlette(routes=[api_mount()])),
        "keys": keys,
        "org": org,
        "trace": trace,
        "jobs": jobs,
        "export_dir": tmp / "exports",
    }
    engine.dispose()
    if request.param == "postgresql":
        pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def world(matrix_world, monkeypatch):
    """The world, with the API wired to its database for this test only (so the environment
    never leaks into tests that run while the session's world is kept)."""
    monkeypatch.setenv("DATABASE_URL", matrix_world["url"])
    monkeypatch.setenv("OBSERVATORY_EXPORT_DIR", str(matrix_world["export_dir"]))
    monkeypatch.setattr(context, "limiter", RateLimiter({r: 1_000_000 for r in Role}))
    get_settings.cache_clear()
    cache._items.clear()
    yield matrix_world
    get_settings.cache_clear()
    cache._items.clear()
