"""Ingest into the ClickHouse span store, on chDB: a SQLite `DATABASE_URL` (orgs, keys,
settings) beside an empty span store that `OBSERVATORY_SPAN_STORE` names, one pair for this
folder's modules (the store a database of the session's chDB folder, `tests/chdb_store.py`;
each module writes to orgs of its own)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import polars as pl
import pytest
from sqlalchemy.engine import Engine

from observatory_core.base.settings import get_settings
from observatory_core.ingest import to_clickhouse
from observatory_core.storage.clickhouse import current
from observatory_core.storage.clickhouse.connect import SpanStore
from observatory_core.storage.engine import get_engine
from observatory_core.storage.migrate import upgrade
from tests.storage.clickhouse.conftest import demo_rows

_TEMPLATE = demo_rows(1)[0]


def llm_call(org: int, n: int, start: datetime, tokens: tuple[int, int], scope: str, **kw) -> dict:
    """A stored-row LLM call of project 3 (trace and span ids from `n`) with the tokens and
    instrumentation scope the twin rule compares (`ingest/dedup.py`)."""
    return dict(
        _TEMPLATE,
        org_id=org,
        project_id=3,
        trace_id=f"{n:032x}",
        span_id=f"{n:016x}",
        parent_span_id=None,
        start_time=start,
        end_time=start + timedelta(milliseconds=800),
        operation="chat",
        llm_call=True,
        scope_name=scope,
        service_name="svc",
        model="gpt-4o",
        input_tokens=tokens[0],
        output_tokens=tokens[1],
        attributes={},
        duplicate_of=None,
        duplicate_trace_id=None,
        **kw,
    )


@dataclass
class ChIngest:
    engine: Engine  # DATABASE_URL
    store: SpanStore  # where the ingest seam writes spans

    def frame(self, sql: str) -> pl.DataFrame:
        """A query's rows (`{db}` is the store's database) as a polars frame."""
        result = self.store.client.query(sql.format(db=self.store.database))
        return pl.DataFrame(
            [dict(zip(result.column_names, r, strict=True)) for r in result.result_rows],
            infer_schema_length=None,
        )


@pytest.fixture(scope="package")
def ch_ingest(tmp_path_factory, chdb_session):
    """A migrated SQLite database and an empty chDB span store, the setting pointing at it for
    the folder's tests (the store the seam opens is this one: no second client on it)."""
    folder = tmp_path_factory.mktemp("ch-ingest")
    engine = get_engine(f"sqlite:///{folder / 'observatory.db'}")
    upgrade(engine)
    store = chdb_session.store("ingest")
    url = chdb_session.url(store.database)
    patch = pytest.MonkeyPatch()
    patch.setenv("OBSERVATORY_SPAN_STORE", url)
    patch.setitem(current._OPEN, url, store)
    get_settings.cache_clear()
    to_clickhouse.forget_settings()
    try:
        yield ChIngest(engine, store)
    finally:
        patch.undo()
        get_settings.cache_clear()
        to_clickhouse.forget_settings()
        chdb_session.drop(store)
        engine.dispose()
