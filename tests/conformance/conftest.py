"""The conformance run: one fake OpenAI API for the session; per store, the real server, an org
and ingest key per client, and every client (each in its own process) run against them, both
stores at once.

The Python clients run in the conformance virtualenv (.venv-conformance, `make conformance`),
the Node client from tests/conformance/node (`npm ci`); both are made by `make test`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import select

from observatory_core.accounts.permissions import Role
from observatory_core.ingest.apikeys import create_key
from observatory_core.storage.engine import get_engine
from observatory_core.storage.migrate import upgrade
from observatory_core.storage.schema import spans
from tests.conformance.fake_openai import FakeOpenAI
from tests.conftest import PG_ADMIN_URL, pg_admin
from tests.helpers import admin_scope, make_org
from tests.live_server import running_servers

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
VENV_PYTHON = Path(
    os.environ.get("OBSERVATORY_CONFORMANCE_PYTHON", ROOT / ".venv-conformance" / "bin" / "python")
)
NODE_DIR = HERE / "node"
CLIENT_TIMEOUT_S = 120
SETTLE_TIMEOUT_S = 30

# client name -> the command that runs it (each in its own process)
CLIENTS: dict[str, list[str]] = {
    "openinference-openai": [str(VENV_PYTHON), "openinference_openai.py"],
    "openllmetry-openai": [str(VENV_PYTHON), "openllmetry_openai.py"],
    "otel-genai-openai": [str(VENV_PYTHON), "otel_genai_openai.py"],
    "openinference-langchain": [str(VENV_PYTHON), "openinference_langchain.py"],
    "litellm-otel": [str(VENV_PYTHON), "litellm_otel.py"],
    "vercel-ai": ["node", str(NODE_DIR / "client.mjs")],
}
CLIENT_ENV = {
    "otel-genai-openai": {
        "OTEL_SEMCONV_STABILITY_OPT_IN": "gen_ai_latest_experimental",
        "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "span_only",
    },
}


@dataclass
class ClientRun:
    name: str
    org_id: int
    returncode: int
    output: str

    def check(self) -> None:
        assert self.returncode == 0, f"client {self.name} failed:\n{self.output[-4000:]}"


def _missing_tools() -> str | None:
    if not VENV_PYTHON.exists():
        return f"{VENV_PYTHON} is missing: run `make conformance` (part of `make test`)."
    if not (NODE_DIR / "node_modules").is_dir():
        return f"{NODE_DIR}/node_modules is missing: run `make conformance` (part of `make test`)."
    return None


@pytest.fixture(scope="session")
def fake_api():
    server = FakeOpenAI().start()
    yield server
    server.stop()


def _run_client(name: str, base: str, key: str, api: str) -> tuple[int, str]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("OTEL_")},
        "CONFORMANCE_OTLP": f"{base}/v1/traces",
        "CONFORMANCE_KEY": key,
        "CONFORMANCE_API": api,
        "OTEL_SERVICE_NAME": f"conformance-{name}",
        "OPENAI_API_KEY": "sk-conformance",
        "NO_PROXY": "127.0.0.1,localhost",
        "PYTHONDONTWRITEBYTECODE": "1",
        **CLIENT_ENV.get(name, {}),
    }
    for proxy in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY"):
        env.pop(proxy, None)
    try:
        done = subprocess.run(
            CLIENTS[name],
            cwd=HERE / "clients",
            env=env,
            capture_output=True,
            text=True,
            timeout=CLIENT_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired as exc:
        return -1, f"timed out after {CLIENT_TIMEOUT_S}s: {exc.stdout} {exc.stderr}"
    return done.returncode, done.stdout + done.stderr


# the servers' /ops/metrics token: `_settle` reads their ingest queue there
METRICS_TOKEN = "conformance-metrics"


def _queued_spans(base: str) -> float:
    """The server's spans accepted and not yet committed (`observatory_ingest_queue_spans`)."""
    request = urllib.request.Request(
        f"{base}/ops/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        for line in answer.read().decode().splitlines():
            if line.startswith("observatory_ingest_queue_spans "):
                return float(line.split()[1])
    raise AssertionError(f"{base}/ops/metrics has no observatory_ingest_queue_spans")


def _settle(base: str) -> None:
    """Wait until the server's writer has committed every span it accepted. The OTLP route
    answers after the commit and each client exits once its exporter had its answers, so
    this is at once unless an export timed out client-side while the server went on; the
    writer's queue drops only after its commit."""
    deadline = time.time() + SETTLE_TIMEOUT_S
    while (queued := _queued_spans(base)) and time.time() < deadline:
        time.sleep(0.05)
    assert not queued, (
        f"{base}'s writer still held {queued:.0f} accepted spans after {SETTLE_TIMEOUT_S} s: "
        "the figures below would be read before every span was stored"
    )


def _store(tmp, store: str, request) -> tuple[str, dict[str, int], dict, dict]:
    """A migrated database of the store, an org per client with an ingest key and a read key."""
    if store == "sqlite":
        url = f"sqlite:///{tmp / 'conformance.db'}"
    else:
        request.getfixturevalue("pg_url")  # fails loudly, with the fix, if PostgreSQL is down
        name = f"obs_conformance_{os.getpid()}"  # one per test session, never shared
        pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', f'CREATE DATABASE "{name}"')
        url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    engine = get_engine(url)
    upgrade(engine)
    orgs, keys, read_keys = {}, {}, {}
    for client in CLIENTS:
        org_id, _ = make_org(engine, client, ("default",))
        orgs[client] = org_id
        keys[client] = create_key(engine, admin_scope(org_id), f"{client} key")
        read_keys[client] = create_key(
            engine, admin_scope(org_id), f"{client} reader", scopes=("read",), role=Role.ADMIN
        )
    return url, orgs, keys, read_keys


STORES = ("sqlite", "postgresql")
# The slowest client first (LiteLLM's import alone takes seconds), so that it never starts last.
SLOWEST_FIRST = sorted(CLIENTS, key=lambda c: c != "litellm-otel")


@pytest.fixture(scope="module")
def conformance_runs(request, tmp_path_factory, fake_api):
    """Both stores at once: per store the real server, an org and ingest key per client, and
    every client (each in its own process) run against them. The two servers start together
    and the twelve client runs share one pool: they mostly wait on the network and the fake
    API, so this takes about as long as one store did."""
    missing = _missing_tools()
    if missing:
        pytest.fail(missing)
    tmp = tmp_path_factory.mktemp("conformance")
    prepared = {store: _store(tmp_path_factory.mktemp(store), store, request) for store in STORES}
    urls = [prepared[store][0] for store in STORES]
    engines = {store: get_engine(prepared[store][0]) for store in STORES}
    with running_servers(urls, tmp, OBSERVATORY_METRICS_TOKEN=METRICS_TOKEN) as bases:
        base_of = dict(zip(STORES, bases, strict=True))
        with ThreadPoolExecutor(max_workers=4) as pool:
            futures = {
                (store, c): pool.submit(
                    _run_client,
                    c,
                    base_of[store],
                    prepared[store][2][c],
                    fake_api.base_url(f"{store}-{c}"),
                )
                for c in SLOWEST_FIRST
                for store in STORES
            }
            runs = {
                store: {
                    c: ClientRun(c, prepared[store][1][c], *futures[store, c].result())
                    for c in CLIENTS
                }
                for store in STORES
            }
        for store in STORES:
            _settle(base_of[store])
        yield {
            store: {
                "engine": engines[store],
                "runs": runs[store],
                "api": fake_api,
                "store": store,
                "base": base_of[store],
                "read_keys": prepared[store][3],
            }
            for store in STORES
        }
    for engine in engines.values():
        engine.dispose()
    pg_admin(f'DROP DATABASE IF EXISTS "obs_conformance_{os.getpid()}" WITH (FORCE)')


@pytest.fixture(scope="module", params=STORES)
def conformance(request, conformance_runs):
    """Per store: {client name: ClientRun}, the engine, and the fake API's call log."""
    return conformance_runs[request.param]


def stored(conformance, client: str) -> list[dict]:
    """The client's stored spans (as dicts), checked that the client itself succeeded."""
    run = conformance["runs"][client]
    run.check()
    with conformance["engine"].connect() as conn:
        rows = conn.execute(select(spans).where(spans.c.org_id == run.org_id)).mappings().all()
    return [_decoded(dict(r)) for r in rows]


def _decoded(row: dict) -> dict:
    for key in ("attributes", "metadata", "tags"):
        if isinstance(row.get(key), str):
            row[key] = json.loads(row[key])
    return row


def api_rows(conformance, client: str, query: str) -> list[dict]:
    """GET /api/v1/<query> as the client's org, through the running server; the rows."""
    request = urllib.request.Request(
        f"{conformance['base']}/api/v1/{query}",
        headers={"Authorization": f"Bearer {conformance['read_keys'][client]}"},
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read())["data"]["rows"]


def calls(conformance, client: str):
    """What the fake API answered this client (the independent count)."""
    return conformance["api"].log.of(f"{conformance['store']}-{client}")


if (
    __name__ == "__main__"
):  # pragma: no cover - a debugging aid: python -m tests.conformance.conftest
    sys.exit("run the suite with pytest tests/conformance")
