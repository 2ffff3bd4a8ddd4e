"""bench/clickhouse_app_case.py's checks on two stores holding the same demo data: equal and
non-empty for the demo org at the demo data's end, different for another org or window, and
the case refuses to measure a store whose answers are empty."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from bench.app_checks import check_of, empty
from bench.case import END, read_ops, write_trace
from bench.clickhouse_app_case import READS, TRACE, measure
from observatory_core.accounts.permissions import Role
from observatory_core.accounts.scope import Scope
from observatory_core.demo.load import load_demo
from observatory_core.storage.engine import get_engine
from observatory_core.storage.migrate import upgrade
from observatory_core.storage.schema import orgs
from tests.chdb_store import copy_into_span_store


def _migrated(url: str):
    engine = get_engine(url)
    upgrade(engine)
    return engine


@pytest.fixture(scope="module")
def stores(chdb_session, tmp_path_factory):
    """SQLite holding ~2k demo spans and the main case's trace; a span store holding a copy."""
    engine = _migrated(f"sqlite:///{tmp_path_factory.mktemp('bench') / 'app.db'}")
    load_demo(engine, spans=2000, days=30, seed=7, end=END)
    write_trace(engine, spans_in_trace=50)
    store = copy_into_span_store(chdb_session, engine, "bench_app")
    with engine.connect() as conn:
        ids = dict(conn.execute(select(orgs.c.slug, orgs.c.id)).all())
    yield engine, store.engine, ids
    chdb_session.drop(store)
    engine.dispose()


def _checks(reads, org_id: int, end=END) -> dict:
    ops = read_ops(reads, Scope(org_id=org_id, role=Role.ADMIN), TRACE, end=end)
    return {name: check_of(name, ops[name](), end) for name in READS}


def test_both_stores_give_equal_non_empty_checks_that_change_with_org_and_window(stores):
    engine, chdb, ids = stores
    acme = _checks(engine, ids["acme"])
    assert _checks(chdb, ids["acme"]) == acme
    assert not [name for name, check in acme.items() if empty(check)]
    # the demo's errors over 7 days fill no page at this size: every one of them, by id
    errors = acme["explorer_first_page_7d_errors_by_cost"]
    assert 0 < errors[0] < 50
    other_org = next(i for slug, i in ids.items() if slug != "acme")
    for other in (
        _checks(engine, other_org),
        _checks(engine, ids["acme"], END - timedelta(days=3)),
    ):
        changed = [name for name in READS if other[name] != acme[name]]
        # the 50-span trace is acme's and has no window; the all-time search has no window
        assert set(READS) - set(changed) <= {
            "explorer_open_50_span_trace",
            "explorer_search_all_time",
        }


def test_measure_gives_the_same_checks_on_both_stores(stores):
    engine, chdb, ids = stores
    figures = {
        db: {e["operation"]: e["check"] for e in measure(engine, reads, db, 2000, 2050, 2, False)}
        for db, reads in (("sqlite", engine), ("chdb", chdb))
    }
    assert figures["sqlite"] == figures["chdb"]
    assert len(figures["sqlite"]) == len(READS)


def test_measure_refuses_a_store_that_answers_nothing(stores, tmp_path):
    engine, _, _ = stores
    bare = _migrated(f"sqlite:///{tmp_path / 'bare.db'}")
    load_demo(bare, spans=0, days=30, seed=7, end=END)  # the orgs, no spans
    with pytest.raises(SystemExit, match="answered nothing"):
        measure(engine, bare, "sqlite", 2000, 0, 1, False)
    bare.dispose()


def test_a_full_page_of_tied_errors_is_checked_row_by_row():
    name = "explorer_first_page_7d_errors_by_cost"

    def page(statuses_and_ages):
        rows = [
            {
                "trace_id": f"{int(age.total_seconds()):032x}",  # a span per age
                "span_id": f"{1:016x}",
                "status": status,
                "start_time": END - age,
                "total_cost_usd": 0.0,
            }
            for status, age in statuses_and_ages
        ]
        return type("Page", (), {"rows": rows})()

    inside = [("error", timedelta(hours=i)) for i in range(50)]
    assert check_of(name, page(inside))[-1] == "all errors of the window: True"
    # another org's or window's rows would show here: an ok span, or one 8 days old
    for wrong in (("ok", timedelta(hours=1)), ("error", timedelta(days=8))):
        assert check_of(name, page([*inside[:49], wrong]))[-1] == "all errors of the window: False"
    # a short page is every match: its ids, whatever order the store gave them in
    assert check_of(name, page(inside[:30])) == check_of(name, page(inside[:30][::-1]))
    assert check_of(name, page(inside[:30])) != check_of(name, page(inside[1:31]))


def test_a_full_page_is_the_same_whichever_rows_tie_at_its_end():
    """Rows tied on the sort key at a full page's end are cut by each store's own tiebreak: the
    checks agree on any of them, but not on a different row before the tie, nor on values."""
    name = "explorer_first_page_24h_by_time"

    def row(n: int, seconds: int) -> dict:
        return {
            "trace_id": f"{n:032x}",
            "span_id": f"{n:016x}",
            "start_time": END - timedelta(seconds=seconds),
        }

    def page(rows):
        return type("Page", (), {"rows": rows})()

    before = [row(n, n) for n in range(1, 46)]  # 45 rows, each its own time
    tied = [row(100 + n, 60) for n in range(8)]  # 8 rows at one time, the page holds 5
    one = check_of(name, page(before + tied[:5]))
    assert one == check_of(name, page(before + tied[3:8][::-1]))  # other tied rows, other order
    assert one != check_of(name, page([row(99, 1), *before[1:], *tied[:5]]))  # another row
    assert one != check_of(name, page(before + [row(200, 61), *tied[:4]]))  # another time
    assert one != check_of(name, page(before + [tied[0]] * 5))  # one span listed five times
    swapped = [dict(r) for r in before + tied[:5]]  # two rows' times swapped, same order
    swapped[0]["start_time"], swapped[1]["start_time"] = (
        swapped[1]["start_time"],
        swapped[0]["start_time"],
    )
    swapped[0], swapped[1] = swapped[1], swapped[0]
    assert one != check_of(name, page(swapped))
    with pytest.raises(KeyError, match="start_time"):
        check_of(name, page([{"trace_id": "a", "span_id": "b"}] * 50))
