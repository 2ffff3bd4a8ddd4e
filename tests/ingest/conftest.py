"""Ingestion fixtures: an org with a key, the shared OTLP samples, and the live server."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from observatory_core.ingest.apikeys import create_key
from observatory_core.storage.engine import get_engine
from observatory_core.storage.migrate import upgrade
from tests.conftest import PG_ADMIN_URL, pg_admin
from tests.helpers import admin_scope, make_org, run_coroutine
from tests.live_server import running_servers

# Copies of ../shared/data/otlp (what the OpenTelemetry Python SDK 1.45 sends), so the tests
# do not depend on a folder beside the checkout.
SAMPLES = Path(__file__).resolve().parent / "data"
PROTOBUF = "application/x-protobuf"
JSON = "application/json"


def sample(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


@pytest.fixture
def org_key(engine):
    """(engine, org id, project ids, an ingest key of the org)."""
    org_id, project_ids = make_org(engine, "acme", ("support-bot", "default"))
    return engine, org_id, project_ids, create_key(engine, admin_scope(org_id), "test key")


def post(base: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict, bytes]:
    """POST /v1/traces; the status, headers and body whatever the status."""
    request = urllib.request.Request(f"{base}/v1/traces", data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def json_message(body: bytes) -> str:
    return json.loads(body)["message"]


STORES = ("sqlite", "postgresql")


def _live_store(tmp, store: str, request) -> dict:
    """A migrated database of the store with org acme (the demo traffic's) and org globex (the
    tests'), and an ingest key of globex."""
    if store == "sqlite":
        url = f"sqlite:///{tmp / 'ingest.db'}"
    else:
        request.getfixturevalue("pg_url")  # fails loudly, with the fix, if PostgreSQL is down
        # A database of its own: the per-test `engine` fixture empties the shared one.
        name = "obs_ingest_" + tmp.name.replace("-", "_").lower()[-20:]
        pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', f'CREATE DATABASE "{name}"')
        url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    engine = get_engine(url)
    upgrade(engine)
    make_org(engine, "acme", ("support-bot",))
    org_id, project_ids = make_org(engine, "globex", ("default", "search"))
    key = create_key(engine, admin_scope(org_id), "live test key")
    return {
        "url": url,
        "engine": engine,
        "org_id": org_id,
        "project_ids": project_ids,
        "key": key,
        "db": store,
        "pg_name": None if store == "sqlite" else name,
    }


@pytest.fixture(scope="module")
def live_ingest_servers(request, tmp_path_factory):
    """The real server on each database, both started (and stopped) at once, with demo
    traffic on (into org acme) and a second org (globex) whose key the tests use, so demo
    spans never mix with a test's spans."""
    stores = {s: _live_store(tmp_path_factory.mktemp(f"ingest-{s}"), s, request) for s in STORES}
    urls = [stores[s]["url"] for s in STORES]
    tmp = tmp_path_factory.mktemp("ingest-servers")
    with running_servers(
        urls, tmp, OBSERVATORY_DEMO_TRAFFIC="40", OBSERVATORY_INGEST_MAX_BODY_MB="2"
    ) as bases:
        for store, base in zip(STORES, bases, strict=True):
            stores[store]["base"] = base
        yield stores
    for store in stores.values():
        store["engine"].dispose()
        if store["pg_name"]:
            pg_admin(f'DROP DATABASE IF EXISTS "{store["pg_name"]}" WITH (FORCE)')


@pytest.fixture(scope="module", params=STORES)
def live_ingest(request, live_ingest_servers):
    """The real server on one database (see live_ingest_servers)."""
    return live_ingest_servers[request.param]


def call_route(headers: dict[str, str], chunks: list[bytes]) -> tuple[int, dict, bytes]:
    """`POST /v1/traces` through the real route, in process; the body is taken from `chunks`
    (which is left holding what the route did not read)."""

    from starlette.requests import Request

    from observatory_core.api.otlp_route import otlp_traces

    pending = chunks if chunks else [b""]

    async def receive():
        chunk = pending.pop(0) if pending else b""
        return {"type": "http.request", "body": chunk, "more_body": bool(pending)}

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/traces",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
    }
    response = run_coroutine(otlp_traces(Request(scope, receive)))
    return response.status_code, dict(response.headers), response.body


@pytest.fixture
def route(org_key, monkeypatch):
    """(send, engine, org id): `send(body, kind, chunk=0, **headers)` posts through the real
    route with a real receiver (1 MiB body limit) and group-commit writer on the test's
    database; `chunk` splits the body into pieces of that size, as a network would."""
    from observatory_core.api import otlp_route
    from observatory_core.ingest.receiver import Receiver
    from observatory_core.ingest.writer import BatchWriter

    engine, org_id, _, key = org_key
    receiver = Receiver(engine, max_body_bytes=2**20, max_inflated_bytes=4 * 2**20)
    writer = BatchWriter(engine)
    monkeypatch.setattr(otlp_route, "get_ingest", lambda _settings: (receiver, writer))

    def send(body: bytes, kind: str = JSON, chunk: int = 0, **extra: str):
        headers = {"content-type": kind, "authorization": f"Bearer {key}", **extra}
        headers.setdefault("content-length", str(len(body)))
        parts = [body[i : i + chunk] for i in range(0, len(body), chunk)] if chunk else [body]
        return call_route(headers, parts)

    yield send, engine, org_id
    writer.stop()
