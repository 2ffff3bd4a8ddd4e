"""Loads demo data: creates the demo orgs and projects, then streams generated spans in."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.engine import Engine

from observatory_core.accounts.tenancy import ensure_org, ensure_project
from observatory_core.demo.catalog import ORGS
from observatory_core.demo.collector import fewer_collections
from observatory_core.demo.producer import demo_rows, produced_rows
from observatory_core.ingest import to_clickhouse
from observatory_core.ingest.persist import write_spans
from observatory_core.ingest.pricing import PriceBook
from observatory_core.storage.clickhouse.current import span_store


@dataclass(frozen=True)
class LoadReport:
    spans: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.spans / self.seconds if self.seconds else 0.0


def ensure_demo_tenants(engine: Engine) -> dict[tuple[str, str], tuple[int, int]]:
    ids: dict[tuple[str, str], tuple[int, int]] = {}
    with engine.begin() as conn:
        for org in ORGS:
            org_id = ensure_org(conn, org.slug, org.name)
            for project in org.projects:
                ids[(org.slug, project.slug)] = (
                    org_id,
                    ensure_project(conn, org_id, project.slug, project.name),
                )
    return ids


def _json_unread(engine: Engine, ids: dict[tuple[str, str], tuple[int, int]]) -> bool:
    """Whether the span store's write path reads no `metadata` or `attributes` of the demo's
    rows, so they may come as the insert's JSON text (`producer.with_json_text`): it reads
    them only to fill an org's declared dimensions (`to_clickhouse.fill_dimensions`), and for
    twins, which the demo's rows never make (they have no `scope_name`, so
    `set_aside_twins` returns before reading attributes). The write reads the settings once,
    at its start, from the same 60-second cache; should that cache renew in between and
    find a dimension declared meanwhile, the load fails loudly (the text has no keys: `'JsonText'
    object has no attribute 'get'`): it cannot store other values."""
    declared = to_clickhouse.org_settings(engine).dimensions
    return not any(declared.get(org_id) for org_id, _ in ids.values())


def load_demo(
    engine: Engine,
    *,
    spans: int,
    days: float,
    seed: int,
    end: datetime | None = None,
    text_max_chars: int = 16_000,
    on_batch: Callable[[int, int], None] | None = None,
) -> LoadReport:
    """Generate about `spans` spans (whole traces) over `days` days ending at `end` and store them.
    Into the ClickHouse span store, past one batch, the rows are made in a child process while
    this one stores them (`demo/producer.py`); else, and into SQLite and PostgreSQL, here."""
    import time

    ids = ensure_demo_tenants(engine)
    with engine.connect() as conn:
        prices = PriceBook.load(conn)
    end = end or datetime.now(UTC)
    started = time.perf_counter()
    # one batch or less gains nothing from the child (the writer would wait for all of it)
    # and pays its start (about a second: the bootstrap's top-ups of a few hundred spans)
    child = span_store() is not None and spans > to_clickhouse.BATCH
    args = dict(
        ids=ids,
        end=end,
        days=days,
        seed=seed,
        prices=prices,
        spans=spans,
        text_max_chars=text_max_chars,
    )
    if child:
        rows = produced_rows(**args, json_text=_json_unread(engine, ids))
    else:
        rows = demo_rows(**args)
    try:
        with fewer_collections():
            # the generator's ids are random (128-bit trace ids): each span once
            written = write_spans(engine, rows, on_batch=on_batch, each_once=True)
    finally:
        close = getattr(rows, "close", None)
        if close is not None:
            close()  # a failed write: the child ends
    return LoadReport(spans=written, seconds=time.perf_counter() - started)
