"""A small, varied data set for explorer tests: two orgs, traces with trees, hostile text."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from functools import partial

import polars as pl
import pytest

from observatory_core.ingest.spanrows import complete_row
from observatory_core.storage.clickhouse.writes import write_spans
from observatory_core.storage.engine import get_engine
from observatory_core.storage.migrate import upgrade
from tests.chdb_store import copy_into_span_store, with_store_ids
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


# The stores the explorer's reference tests run on: the two of DATABASE_URL and the ClickHouse
# span store (on chDB, its spans copied from a SQLite database by migrate-spans). A module
# whose reads are not routed onto the span store yet lists itself in NOT_ON_SPAN_STORE.
EXPLORER_STORES = ["sqlite", "postgresql", "chdb"]
NOT_ON_SPAN_STORE: dict[str, str] = {}


def _database(request, tmp_path_factory, kind: str):
    """A migrated, empty database of `kind` (as `db_url` gives; the module's own file on
    SQLite, so a chDB copy's source never meets another module's rows)."""
    if kind == "postgresql":
        url = request.getfixturevalue("pg_url")
        upgrade(get_engine(url))
        return empty_database(url)
    engine = get_engine(f"sqlite:///{tmp_path_factory.mktemp('explorer') / 'explorer.db'}")
    upgrade(engine)
    return engine


def _write(engine, store, rows: list[dict]) -> None:
    """New spans, where the list reads them."""
    if store is None:
        write(engine, rows)
    else:
        write_spans(store, [complete_row(dict(r), 16_000) for r in rows])


def _remove(engine, store, trace_ids: list[str]) -> None:
    """Take a test's spans out again (the product never deletes spans; the derived tables
    follow: rebuilt on SQLite and PostgreSQL, the trace totals' rows deleted on ClickHouse)."""
    if store is None:
        from observatory_core.rollups.maintain import rebuild
        from observatory_core.storage.schema import spans

        with engine.begin() as conn:
            conn.execute(spans.delete().where(spans.c.trace_id.in_(trace_ids)))
        rebuild(engine)
        return
    for table in ("spans", "trace_totals"):
        store.client.command(
            f"DELETE FROM {store.table(table)} WHERE trace_id IN {{ids:Array(String)}}",
            parameters={"ids": list(trace_ids)},
        )


def _remove_spans(engine, store, span_ids: list[str], trace_ids: list[str]) -> None:
    """Take some spans of these traces out again, the traces' totals then made from the spans
    left (on ClickHouse: the trace totals' rows deleted and written again by the view's own
    query over those traces' spans)."""
    if store is None:
        from observatory_core.rollups.maintain import rebuild
        from observatory_core.storage.schema import spans

        with engine.begin() as conn:
            conn.execute(spans.delete().where(spans.c.span_id.in_(span_ids)))
        rebuild(engine)
        return
    from observatory_core.storage.clickhouse.ddl import Naming, _trace_totals

    ids = {"ids": list(trace_ids)}
    store.client.command(
        f"DELETE FROM {store.table('spans')} WHERE span_id IN {{spans:Array(String)}}",
        parameters={"spans": list(span_ids)},
    )
    store.client.command(
        f"DELETE FROM {store.table('trace_totals')} WHERE trace_id IN {{ids:Array(String)}}",
        parameters=ids,
    )
    (view,) = _trace_totals(Naming(store.database), versions=True, retention=True, view_only=True)
    target, query = view.split("\nTO ", 1)[1].split("\nAS ", 1)
    query = query.replace(
        f"FROM {store.table('spans')} AS spans",
        f"FROM (SELECT * FROM {store.table('spans')} WHERE trace_id IN {{ids:Array(String)}}) "
        "AS spans",
    )
    store.client.command(f"INSERT INTO {target} {query}", parameters=ids)


def _load(engine) -> dict:
    acme, acme_projects = make_org(engine, "acme", projects=("bot", "search"))
    globex, globex_projects = make_org(engine, "globex")
    write(engine, build_rows(acme, acme_projects, seed=1))
    write(engine, build_rows(globex, globex_projects, seed=2, traces=30))
    return {"acme": acme, "globex": globex, "projects": acme_projects, "df": all_spans(engine)}


# The span store's copy, made once per test session (the modules only read it; a test that
# writes takes its spans out again): one copy costs a SQLite load and a migrate-spans run.
_SPAN_STORE_COPY: dict[int, dict] = {}


def _span_store_copy(request, tmp_path_factory) -> dict:
    chdb_session = request.getfixturevalue("chdb_session")
    copy = _SPAN_STORE_COPY.get(id(chdb_session))
    if copy is None:
        engine = _database(request, tmp_path_factory, "sqlite")
        data = _load(engine)
        store = copy_into_span_store(chdb_session, engine, "explorer")
        engine.dispose()
        copy = _SPAN_STORE_COPY[id(chdb_session)] = {
            **data,
            "engine": store.engine,
            "span_store": store,  # for racing writers' later copies (`write_later_copy`)
            "df": with_store_ids(data["df"], store),
            "write": partial(_write, None, store),
            "remove": partial(_remove, None, store),
            "remove_spans": partial(_remove_spans, None, store),
        }
    return copy


def globex_project(explorer: dict) -> tuple[int, int]:
    """The second org of the fixture and one of its projects: where a test writes spans of
    its own (and takes them out again), away from acme's, which most tests read."""
    globex = explorer["globex"]
    return globex, explorer["df"].filter(pl.col("org_id") == globex)["project_id"][0]


@pytest.fixture(scope="module", params=EXPLORER_STORES)
def explorer(request, tmp_path_factory):
    kind = request.param
    if kind == "chdb":
        if request.module.__name__ in NOT_ON_SPAN_STORE:
            pytest.skip(f"{NOT_ON_SPAN_STORE[request.module.__name__]}: not on the span store yet")
        return {**_span_store_copy(request, tmp_path_factory), "store": kind}
    engine = _database(request, tmp_path_factory, kind)
    return {
        **_load(engine),
        "engine": engine,
        "store": kind,
        "write": partial(_write, engine, None),
        "remove": partial(_remove, engine, None),
        "remove_spans": partial(_remove_spans, engine, None),
    }
