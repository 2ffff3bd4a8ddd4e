"""With OBSERVATORY_SPAN_STORE set, the explorer's routes (/traces, /traces/days,
/traces/{id}), /metrics, /metrics/summary, /changes, /users and /sessions read the span store
(and so do the pages' loaders), and everything
else DATABASE_URL: the rows answered are the span store's (its ids, and three spans only it
holds, outside the explorer's week), equal to polars on the raw rows, and unset, they are
DATABASE_URL's.

One SQLite database and its copy in the span store (plus the three spans only the store holds),
built once for the folder's tests, and an API client on each, shared by the tests here."""

from __future__ import annotations

from datetime import timedelta

import polars as pl
import pytest
from starlette.applications import Starlette

from observatory_core.api import context
from observatory_core.api.app import api_mount
from observatory_core.api.common import cache
from observatory_core.api.ratelimit import RateLimiter
from observatory_core.base.settings import get_settings
from observatory_core.filters.spec import FilterSpec
from observatory_core.ingest.apikeys import create_key
from observatory_core.ingest.spanrows import complete_row
from observatory_core.storage.clickhouse.current import close_span_stores
from observatory_core.storage.clickhouse.writes import write_spans
from observatory_core.storage.engine import get_engine
from observatory_core.storage.migrate import upgrade
from tests.api.conftest import ApiClient
from tests.chdb_store import copy_into_span_store, with_store_ids
from tests.helpers import admin_scope, all_spans, make_org, span, write
from tests.metrics.reference import reference_trace_metrics
from tests.traces.conftest import NOW, build_rows

STORE_MODEL, STORE_COST = "store-only-model", 0.25
STORE_USER, STORE_SESSION = "store-only-user", "store-only-session"


@pytest.fixture(scope="package")
def routed(tmp_path_factory, chdb_session):
    url = f"sqlite:///{tmp_path_factory.mktemp('routed') / 'app.db'}"
    engine = get_engine(url)
    upgrade(engine)
    acme, projects = make_org(engine, "acme", projects=("bot", "search"))
    globex, globex_projects = make_org(engine, "globex")
    write(engine, build_rows(acme, projects, seed=5, traces=25, now=NOW))
    write(engine, build_rows(globex, globex_projects, seed=6, traces=10, now=NOW))
    store = copy_into_span_store(chdb_session, engine, "routed")
    # held by the span store only, ten days back: a tool call that counts, and a twin set aside
    # (`duplicate_of`) that counts in no figure
    tool = span(acme, projects[0], NOW - timedelta(days=10), operation="execute_tool")
    twin = span(
        acme,
        projects[0],
        NOW - timedelta(days=10),
        duplicate_of=tool["span_id"],
        duplicate_trace_id=tool["trace_id"],
        duration_ms=9e6,
    )
    # and an LLM call of a model only the span store has seen, for the reports
    call = span(
        acme,
        projects[0],
        NOW - timedelta(days=10),
        model=STORE_MODEL,
        input_cost_usd=STORE_COST,
        duration_ms=5.0,
        user_id=STORE_USER,
        session_id=STORE_SESSION,
    )
    extra = [tool, twin, call]
    assert write_spans(store, [complete_row(dict(r), 16_000) for r in extra]) == 3
    key = create_key(engine, admin_scope(acme), "read key", scopes=("read",), role="developer")
    df = all_spans(engine)
    yield {
        "url": url,
        "store_url": chdb_session.url(store.database),
        "key": key,
        "acme": acme,
        "sql_df": df,
        "store_df": with_store_ids(df, store),
    }
    close_span_stores()
    chdb_session.drop(store)


@pytest.fixture(params=["span store", "DATABASE_URL"])
def client(request, routed, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", routed["url"])
    if request.param == "span store":
        monkeypatch.setenv("OBSERVATORY_SPAN_STORE", routed["store_url"])
    else:
        monkeypatch.delenv("OBSERVATORY_SPAN_STORE", raising=False)
    get_settings.cache_clear()
    monkeypatch.setattr(context, "limiter", RateLimiter())
    cache._items.clear()
    client = ApiClient(Starlette(routes=[api_mount()]))
    client.headers["authorization"] = f"Bearer {routed['key']}"
    on_store = request.param == "span store"
    yield client, routed["store_df" if on_store else "sql_df"], on_store
    get_settings.cache_clear()


FORTNIGHT = FilterSpec(relative=None, start=NOW - timedelta(days=14), end=NOW)


SPAN_WINDOW = f"start={FORTNIGHT.start.isoformat()}&end={NOW.isoformat()}".replace("+", "%2B")


def _traces(df: pl.DataFrame, acme: int, start, end) -> int:
    spec = FilterSpec(relative=None, start=start, end=end)
    series = ("trace_count.count",)
    frame = reference_trace_metrics(df, spec, NOW, acme, series, (), None)
    return int(frame["trace_count.count"].sum())


# the traces only the span store holds, ten days back: the tool call's and the LLM call's (the
# twin's trace counts nowhere: its one span is set aside)
STORE_TRACES = 2
