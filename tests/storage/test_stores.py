"""Every store implements the whole interface and compiles every neutral construct, and the
behaviours storage itself relies on hold on each real database."""

from __future__ import annotations

import inspect
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, column, func, select, table
from sqlalchemy.engine.url import URL

from observatory_core.base.zones import Bucketing, Zone
from observatory_core.storage import bulk
from observatory_core.storage.dialect import NEUTRAL_CONSTRUCTS, text_search
from observatory_core.storage.packed_sketch import SKETCH_CONSTRUCTS
from observatory_core.storage.schema import spans
from observatory_core.storage.stores import MODULES, Store, all_stores, store_for
from tests.helpers import make_org, span

STORES = all_stores()
IDS = [s.name for s in STORES]


def _dialect(store: Store):
    return URL.create(store.name).get_dialect()()


def test_every_store_module_registers_one_store():
    assert len(STORES) == len(MODULES) >= 2
    for store in STORES:
        assert type(store).__module__.rsplit(".", 1)[1] in MODULES
        assert store_for(store.name) is store


@pytest.mark.parametrize("store", STORES, ids=IDS)
def test_every_abstract_member_is_implemented(store):
    cls = type(store)
    assert not inspect.isabstract(cls), f"{cls.__name__} leaves {cls.__abstractmethods__} open"
    for member in Store.__abstractmethods__:
        # implemented by the store itself, not inherited from the interface
        assert member in cls.__dict__, f"{cls.__name__} does not implement {member}"


@pytest.mark.parametrize("store", STORES, ids=IDS)
@pytest.mark.parametrize(
    "construct", NEUTRAL_CONSTRUCTS + SKETCH_CONSTRUCTS, ids=lambda c: c.__name__
)
def test_every_construct_compiles_for_every_store(store, construct):
    specs = construct._compiler_dispatcher.specs
    assert store.name in specs, f"{store.name} has no SQL for {construct.__name__}"
    t = table("t", column("a", Integer), column("b", Integer), column("c", Integer))
    if construct.__name__ == "percentile_cont":
        expression = construct(t.c.a, 0.5)
    elif construct.__name__ == "time_bucket":
        expression = construct(t.c.a, 60)
    elif construct.__name__ == "zoned_bucket":
        start = datetime(2026, 3, 1, tzinfo=UTC)
        bucketing = Bucketing.over(start, start + timedelta(days=3), 86_400, Zone("Asia/Kolkata"))
        expression = construct(t.c.a, bucketing)
    elif construct.__name__ in ("json_array_contains", "json_object_text", "json_tag_value"):
        expression = construct(t.c.a, "x")
    elif construct is text_search:
        expression = construct(t.c.a, t.c.b, t.c.c, "x", store.name)
    elif construct.__name__ in ("least_of", "greatest_of", "sketch_add"):
        expression = construct(t.c.a, t.c.b)
    else:
        expression = construct(t.c.a)
    # the store's own SQL, not a bare call of a function no database has
    assert str(select(expression).compile(dialect=_dialect(store)))
    assert specs[store.name] is not specs.get("default")


@pytest.mark.parametrize("store", STORES, ids=IDS)
def test_search_needles_take_the_text_literally(store):
    """Wildcards and quotes of the user's text survive as text, not as syntax."""
    needle = store.search_needle('50%_"off"\\')
    assert "50" in needle and "off" in needle
    assert needle != '50%_"off"\\'  # escaped or quoted, never passed through


def test_store_for_reads_every_kind_of_bind(engine):
    store = store_for(engine)
    with engine.connect() as conn:
        assert store_for(conn) is store
    assert store_for(engine.dialect) is store
    assert store_for(engine.url) is store
    assert store_for(store.name) is store
    with pytest.raises(LookupError, match="no store"):
        store_for("oracle")


def test_temp_tables_are_empty_each_time(engine):
    store = store_for(engine)
    scratch = Table("scratch_ids", MetaData(), Column("id", Integer), prefixes=["TEMPORARY"])
    with engine.begin() as conn:
        store.prepare_temp_table(conn, scratch, spans.name)
        conn.execute(scratch.insert(), [{"id": 1}, {"id": 2}])
        assert conn.execute(select(func.count()).select_from(scratch)).scalar() == 2
        store.prepare_temp_table(conn, scratch, spans.name)
        assert conn.execute(select(func.count()).select_from(scratch)).scalar() == 0


class _Seen:
    """A `then` hook that records the new spans' ids each batch hands it."""

    columns = ("span_id", "duration_ms")

    def __init__(self) -> None:
        self.batches: list[list[str]] = []

    def __call__(self, conn, new) -> None:
        self.batches.append(sorted(conn.execute(select(new.c.span_id)).scalars()))


def test_bulk_writes_hand_only_new_spans_to_the_hook(engine):
    org, (project,) = make_org(engine, "acme")
    start = datetime(2026, 5, 1, tzinfo=UTC)
    rows = [span(org, project, start + timedelta(seconds=i), span_id=f"s{i}") for i in range(5)]
    seen = _Seen()
    assert bulk.write_spans(engine, rows[:3], then=seen) == 3
    # re-sent spans are skipped, and only the new ones reach the hook
    assert bulk.write_spans(engine, rows, then=seen) == 2
    assert bulk.write_spans(engine, rows, then=seen) == 0
    assert seen.batches == [["s0", "s1", "s2"], ["s3", "s4"]]
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(spans)).scalar() == 5


def test_session_locks_answer_for_one_holder(engine):
    store = store_for(engine)
    with engine.connect() as conn:
        assert store.try_lock(conn, 424242)
        store.unlock(conn, 424242)
        assert store.try_lock(conn, 424242)  # released, so free again
        store.unlock(conn, 424242)
