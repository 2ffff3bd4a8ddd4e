"""One `openai` client instrumented twice at once (OpenInference and the OpenTelemetry GenAI
instrumentation, tests/conformance/clients/twice_openai.py), against the real receiver: every
call arrives as two spans, and each is counted once (docs/ingestion.md, "A call instrumented
twice"), checked against the fake API's own log of the calls.

One client run per store, apart from the six-library run (`conformance` in conftest.py), so
selecting this module (`-k twice`) does not start the others.
"""

from __future__ import annotations

import os
import subprocess
from collections import Counter

import pytest
from sqlalchemy import select

from observatory_core.filters.spec import FilterSpec
from observatory_core.ingest.apikeys import create_key
from observatory_core.ingest.dedup import set_aside_by_scopes
from observatory_core.metrics.engine import run_metrics
from observatory_core.metrics.query import MetricQuery
from observatory_core.storage.engine import get_engine
from observatory_core.storage.migrate import upgrade
from observatory_core.storage.schema import spans, trace_totals
from tests.conformance.conftest import (
    CLIENT_TIMEOUT_S,
    HERE,
    METRICS_TOKEN,
    PG_ADMIN_URL,
    VENV_PYTHON,
    _settle,
    pg_admin,
)
from tests.helpers import admin_scope, make_org
from tests.live_server import running_server

CLIENT = "twice-openai"
# OpenInference's; the GenAI instrumentation's chats come from its shared handler's scope,
# its embeddings from its own
SCOPES = {
    "openinference.instrumentation.openai",
    "opentelemetry.util.genai.handler",
    "opentelemetry.instrumentation.openai_v2",
}


def _run(base: str, key: str, api: str) -> tuple[int, str]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("OTEL_")},
        "CONFORMANCE_OTLP": f"{base}/v1/traces",
        "CONFORMANCE_KEY": key,
        "CONFORMANCE_API": api,
        "OTEL_SERVICE_NAME": f"conformance-{CLIENT}",
        "OPENAI_API_KEY": "sk-conformance",
        "NO_PROXY": "127.0.0.1,localhost",
        "PYTHONDONTWRITEBYTECODE": "1",
        "OTEL_SEMCONV_STABILITY_OPT_IN": "gen_ai_latest_experimental",
        "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "span_only",
    }
    for proxy in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY"):
        env.pop(proxy, None)
    done = subprocess.run(
        [str(VENV_PYTHON), "twice_openai.py"],
        cwd=HERE / "clients",
        env=env,
        capture_output=True,
        text=True,
        timeout=CLIENT_TIMEOUT_S,
    )
    return done.returncode, done.stdout + done.stderr


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def twice(request, tmp_path_factory, fake_api):
    if not VENV_PYTHON.exists():
        pytest.fail(f"{VENV_PYTHON} is missing: run `make conformance` (part of `make test`).")
    tmp = tmp_path_factory.mktemp(f"twice-{request.param}")
    if request.param == "sqlite":
        url = f"sqlite:///{tmp / 'twice.db'}"
    else:
        request.getfixturevalue("pg_url")
        name = f"obs_twice_{os.getpid()}"
        pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', f'CREATE DATABASE "{name}"')
        url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    engine = get_engine(url)
    upgrade(engine)
    org_id, _ = make_org(engine, CLIENT, ("default",))
    key = create_key(engine, admin_scope(org_id), "twice key")
    tag = f"{request.param}-{CLIENT}"
    with running_server(url, tmp, OBSERVATORY_METRICS_TOKEN=METRICS_TOKEN) as base:
        code, output = _run(base, key, fake_api.base_url(tag))
        assert code == 0, f"client {CLIENT} failed:\n{output[-4000:]}"
        _settle(base)
        yield engine, org_id, fake_api.log.of(tag)
    engine.dispose()
    if request.param == "postgresql":
        pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_each_call_of_a_client_instrumented_twice_counts_once(twice):
    engine, org_id, made = twice
    assert len(made) == 7, "the client did not make the calls it should"
    with engine.connect() as conn:
        rows = [
            dict(r) for r in conn.execute(select(spans).where(spans.c.org_id == org_id)).mappings()
        ]
    assert {r["scope_name"] for r in rows} == SCOPES
    assert len(rows) == 2 * len(made)  # every call sent twice, both kept
    kept = [r for r in rows if r["duplicate_of"] is None]
    dups = [r for r in rows if r["duplicate_of"] is not None]
    assert len(kept) == len(dups) == len(made)
    by_id = {(r["trace_id"], r["span_id"]): r for r in rows}
    for dup in dups:  # each duplicate names its twin, the richer span, in its own trace
        twin = by_id[(dup["duplicate_trace_id"], dup["duplicate_of"])]
        assert twin["duplicate_of"] is None and twin["scope_name"] != dup["scope_name"]
        assert twin["scope_name"] == "openinference.instrumentation.openai"
        assert (
            twin["user_id"] is not None
            and twin["model"] == "gpt-4o-mini"
            or (twin["operation"] == "embeddings")
        )
    # the figures: one request per call the fake API answered, its tokens once
    query = MetricQuery(
        ("request_count.count", "input_tokens.sum", "output_tokens.sum", "error_count.count"),
        filters=FilterSpec(relative="24h"),
        bucket=None,
    )
    for force in ("raw", "rollup"):
        row = run_metrics(engine, admin_scope(org_id), query, force=force).frame.row(0, named=True)
        assert row["request_count.count"] == len(made), force
        assert row["input_tokens.sum"] == sum(c.prompt_tokens for c in made), force
        assert row["output_tokens.sum"] == sum(c.completion_tokens for c in made), force
        assert row["error_count.count"] == sum(c.status >= 400 for c in made), force
    with engine.connect() as conn:
        counted = conn.execute(
            select(trace_totals.c.span_count).where(trace_totals.c.org_id == org_id)
        ).scalars()
        assert sum(counted) == len(made)
    pairs = Counter(
        {
            (p["duplicate_scope"], p["counted_scope"]): p["duplicates"]
            for p in set_aside_by_scopes(engine, admin_scope(org_id))
        }
    )
    assert sum(pairs.values()) == len(made)
