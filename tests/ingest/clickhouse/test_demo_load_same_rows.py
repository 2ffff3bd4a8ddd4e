"""The demo load into the ClickHouse span store (rows made in a child process, the stored-span
look-up skipped while the store holds only the load's own spans) stores the very rows the
in-process loader stores for the same seed: spans, trace totals and every rollup, compared
table by table, sorted; so does a load cut short and run again, and a second load adds
nothing."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest

from observatory_core.base.settings import get_settings
from observatory_core.demo import load as demo_load
from observatory_core.demo import producer
from observatory_core.demo.load import demo_rows, ensure_demo_tenants, load_demo
from observatory_core.ingest import persist, to_clickhouse
from observatory_core.ingest.pricing import PriceBook
from observatory_core.storage.clickhouse import current, rollup_retention
from observatory_core.storage.clickhouse.connect import SpanStore
from observatory_core.storage.engine import get_engine
from observatory_core.storage.migrate import upgrade

END = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
# half the spans of before, in batches and chunks half the size: as many boundaries crossed
# (a cut load still past one batch), half the rows made and written four times over
SPANS, DAYS, SEED = 4_500, 30, 7
TABLES = ("spans", "trace_totals", *rollup_retention.TABLES)  # the rollups and actors
WRITTEN_AT = {"version", "max_version", "root_version"}  # when written, not what


def _contents(store: SpanStore, table: str) -> list[tuple]:
    """The table's rows, without the write times, merged (FINAL) but for `spans`, where each
    span must be one row; sorted by their values but the floats (sums merged in another order
    differ in the last digits), each as (those values, the row)."""
    names = [
        n
        for (n,) in store.client.query(
            "SELECT name FROM system.columns WHERE database = %(db)s AND table = %(t)s "
            "ORDER BY position",
            parameters={"db": store.database, "t": table},
        ).result_rows
        if n not in WRITTEN_AT
    ]
    final = "" if table == "spans" else " FINAL"
    rows = store.client.query(
        f"SELECT {', '.join(names)} FROM {store.table(table)}{final}"
    ).result_rows
    return sorted((tuple(repr(v) for v in row if not isinstance(v, float)), row) for row in rows)


def _same(before: list[tuple], after: list[tuple], exact: bool) -> bool:
    """Equal rows; unless `exact`, floats equal to 1e-9 of their size (sums merged in another
    order)."""
    if len(before) != len(after):
        return False
    for (key_a, row_a), (key_b, row_b) in zip(before, after, strict=True):
        if key_a != key_b:
            return False
        for a, b in zip(row_a, row_b, strict=True):
            if not exact and isinstance(a, float) and isinstance(b, float):
                if not math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9):
                    return False
            elif a != b:
                return False
    return True


def _load(monkeypatch, chdb_session, engine, hint: str, load) -> tuple[SpanStore, int]:
    store = chdb_session.store(hint)
    url = chdb_session.url(store.database)
    monkeypatch.setenv("OBSERVATORY_SPAN_STORE", url)
    monkeypatch.setitem(current._OPEN, url, store)
    get_settings.cache_clear()
    to_clickhouse.forget_settings()
    return store, load()


@pytest.fixture(scope="module")
def loads(tmp_path_factory, chdb_session):
    """The same demo loaded by the in-process loader (as before) and by `load_demo`, in small
    batches and chunks so both cross many boundaries; `load_demo` run a second time."""
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setattr(to_clickhouse, "BATCH", 1_000)
    monkeypatch.setattr(producer, "CHUNK", 350)
    children = []  # each load_demo's rows made in a child process (past one batch)

    def counted(**kwargs):
        children.append(kwargs["spans"])
        return producer.produced_rows(**kwargs)

    monkeypatch.setattr(demo_load, "produced_rows", counted)
    folder = tmp_path_factory.mktemp("demo-same-rows")
    engine = get_engine(f"sqlite:///{folder / 'observatory.db'}")
    upgrade(engine)
    ids = ensure_demo_tenants(engine)
    with engine.connect() as conn:
        prices = PriceBook.load(conn)

    def in_process() -> int:
        rows = demo_rows(
            ids, end=END, days=DAYS, seed=SEED, prices=prices, spans=SPANS, text_max_chars=16_000
        )
        return persist.write_spans(engine, rows)

    def loaded() -> int:
        return load_demo(engine, spans=SPANS, days=DAYS, seed=SEED, end=END).spans

    stores = []
    try:
        old, old_written = _load(monkeypatch, chdb_session, engine, "demo_old", in_process)
        stores.append(old)
        new, new_written = _load(monkeypatch, chdb_session, engine, "demo_new", loaded)
        stores.append(new)
        again = loaded()  # the same store: every span already there

        def resumed() -> int:  # a load cut short, then run again in full
            first = load_demo(engine, spans=SPANS // 3, days=DAYS, seed=SEED, end=END).spans
            return first + loaded()

        cut, cut_written = _load(monkeypatch, chdb_session, engine, "demo_cut", resumed)
        stores.append(cut)
        assert children == [SPANS, SPANS, SPANS // 3, SPANS]
        yield old, {"new": new, "resumed": cut}, old_written, (new_written, cut_written), again
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
        to_clickhouse.forget_settings()
        for store in stores:
            chdb_session.drop(store)
        engine.dispose()


def test_both_loaders_write_every_span_once(loads):
    old, stores, old_written, (new_written, cut_written), again = loads
    assert old_written == new_written == cut_written >= SPANS
    assert again == 0
    for store in stores.values():
        (count,) = store.client.query(f"SELECT count() FROM {store.table('spans')}").result_rows[0]
        assert count == new_written


@pytest.mark.parametrize("load", ["new", "resumed"])
@pytest.mark.parametrize("table", TABLES)
def test_the_stored_rows_are_the_in_process_loaders(loads, table, load):
    old, stores, *_ = loads
    before, after = _contents(old, table), _contents(stores[load], table)
    assert before, f"{table}: nothing stored"
    assert len(after) == len(before)
    assert _same(before, after, exact=table == "spans")
