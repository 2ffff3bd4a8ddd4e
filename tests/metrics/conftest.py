"""Two orgs of varied spans, written in batches (one re-sent) so the rollups are built the way
ingestion builds them, not by a rebuild."""

from __future__ import annotations

import random

import pytest

from tests.helpers import all_spans, empty_database, make_org, write
from tests.traces.conftest import NOW, build_rows


def _enrich(rows, seed):
    rng = random.Random(seed)
    for r in rows:
        if r["operation"] == "chat":
            # mostly a first token well before the end; some at the end or past it (the
            # answer in one piece, or clocks apart) and some without a TTFT
            share = rng.choice([rng.uniform(0.05, 0.5)] * 8 + [1.0, 1.3, None])
            r["ttft_ms"] = None if share is None else round(r["duration_ms"] * share, 3)
            r["quality_score"] = rng.choice([None, round(rng.random(), 3)])
    return rows


@pytest.fixture(scope="module")
def metrics_data(db_url):
    engine = empty_database(db_url)
    acme, acme_projects = make_org(engine, "acme", projects=("bot", "search"))
    globex, globex_projects = make_org(engine, "globex")
    rows = _enrich(build_rows(acme, acme_projects, seed=5, traces=160), seed=5)
    for i in range(0, len(rows), 97):  # many small batches, like ingestion
        write(engine, rows[i : i + 97])
    assert write(engine, rows[:200]) == 0  # re-sent: nothing new, rollups untouched
    write(engine, _enrich(build_rows(globex, globex_projects, seed=6, traces=40), seed=6))
    return {
        "engine": engine,
        "acme": acme,
        "globex": globex,
        "projects": acme_projects,
        "df": all_spans(engine),
        "now": NOW,
    }
