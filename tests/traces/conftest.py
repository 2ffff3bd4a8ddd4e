"""A small, varied data set for explorer tests: two orgs, traces with trees, hostile text."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from tests.helpers import all_spans, empty_database, make_org, span, write

NOW = datetime(2026, 11, 20, 12, tzinfo=UTC)
MODELS = ["gpt-4o", "claude-sonnet-4-5", "gemini-2.5-flash", "o'reilly-model"]
PROVIDERS = ["openai", "anthropic", "google"]
TAGS = ["rag", "beta", "vip", "100%", "a_b", "back\\slash"]
TEXTS = [
    "Where is my order #4411?",
    "100% refund please",
    "under_score value",
    "back\\slash path",
    "it's a 'quoted' text",
    'say "hello" twice',
    "'; DROP TABLE spans; --",
    "Résumé naïve café",
    "plain answer about billing",
    "WHERE 1=1 OR x LIKE '%'",
    None,
]


def build_rows(org_id, project_ids, seed, traces=70, now=NOW, days=6):
    rng = random.Random(seed)
    rows = []
    for _ in range(traces):
        trace_id = f"{rng.getrandbits(128):032x}"
        start = now - timedelta(minutes=rng.randrange(0, days * 24 * 60))
        root_id = f"{rng.getrandbits(64):016x}"
        size = rng.choice([1, 1, 2, 4, 6])
        for i in range(size):
            op = (
                "invoke_agent"
                if i == 0 and size > 1
                else rng.choice(["chat", "chat", "embeddings", "execute_tool"])
            )
            tokens_in = 0 if op in ("invoke_agent", "execute_tool") else rng.randrange(1, 3000)
            rows.append(
                span(
                    org_id,
                    rng.choice(project_ids),
                    start + timedelta(milliseconds=200 * i),
                    trace_id=trace_id,
                    span_id=root_id if i == 0 else f"{rng.getrandbits(64):016x}",
                    parent_span_id=None if i == 0 else root_id,
                    duration_ms=round(rng.lognormvariate(6, 1.2), 3),
                    operation=op,
                    provider=rng.choice(PROVIDERS) if op != "execute_tool" else None,
                    model=rng.choice(MODELS) if op != "execute_tool" else None,
                    environment=rng.choice(["production", "staging"]),
                    status=rng.choice(["ok"] * 6 + ["error", "unset"]),
                    user_id=f"user-{rng.randrange(12)}",
                    session_id=f"sess-{rng.randrange(30)}",
                    input_tokens=tokens_in,
                    output_tokens=tokens_in // 3,
                    input_cost_usd=round(tokens_in * 2.5e-6, 9),
                    output_cost_usd=round(tokens_in // 3 * 1e-5, 9),
                    input_text=rng.choice(TEXTS),
                    output_text=rng.choice(TEXTS),
                    tags=rng.sample(TAGS, rng.randrange(0, 3)),
                    metadata={
                        "region": rng.choice(["eu", "us"]),
                        "tier": rng.choice(["free", "pro"]),
                        'odd key "q"': "x",
                    },
                )
            )
    return rows


@pytest.fixture(scope="module")
def explorer(db_url):
    engine = empty_database(db_url)
    acme, acme_projects = make_org(engine, "acme", projects=("bot", "search"))
    globex, globex_projects = make_org(engine, "globex")
    write(engine, build_rows(acme, acme_projects, seed=1))
    write(engine, build_rows(globex, globex_projects, seed=2, traces=30))
    return {
        "engine": engine,
        "acme": acme,
        "globex": globex,
        "projects": acme_projects,
        "df": all_spans(engine),
    }
