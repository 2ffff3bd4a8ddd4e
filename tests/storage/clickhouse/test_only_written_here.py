"""`writes.only_written_here`: the stored-span look-up is skipped only while the store holds,
of the batch's orgs, exactly what this write inserted; a write with `each_once` over spans
another write stored stores none of them again."""

from __future__ import annotations

import pytest

from observatory_core.storage.clickhouse.writes import only_written_here, write_spans
from tests.storage.clickhouse.conftest import demo_rows


def _kept(org_id: int, project_id: int) -> int:
    return 0


def _retained(org_id: int, project_id: int) -> int:
    return 30


@pytest.fixture
def store(chdb_session):
    store = chdb_session.store("only_written_here")
    yield store
    chdb_session.drop(store)


def _per_org(rows: list[dict]) -> dict[int, int]:
    out: dict[int, int] = {}
    for row in rows:
        out[row["org_id"]] = out.get(row["org_id"], 0) + 1
    return out


def _versions(store) -> list[int]:
    return [
        v
        for (v,) in store.client.query(
            f"SELECT DISTINCT version FROM {store.table('spans')}"
        ).result_rows
    ]


def test_only_a_store_holding_just_this_writes_spans_skips_the_look_up(store):
    rows = demo_rows(3000)
    first, rest = rows[:1500], rows[1500:]
    assert only_written_here(store, first, {}, _kept, [])  # empty
    assert only_written_here(store, [], {}, _kept, [])  # nothing to look up
    assert not only_written_here(store, first, {}, _retained, [])  # a TTL could drop rows
    write_spans(store, first)
    mine, versions = _per_org(first), _versions(store)
    assert only_written_here(store, rest, mine, _kept, versions)  # all of it this write's
    assert not only_written_here(store, rest, {}, _kept, [])  # another write's spans are there
    fewer = {org: n - 1 for org, n in mine.items()}
    assert not only_written_here(store, rest, fewer, _kept, versions)


def test_one_of_ours_gone_as_another_writer_adds_one_is_not_skipped(store):
    """The count alone matches (one row left, one came): the other writer's version tells."""
    rows = demo_rows(3000)
    first, rest = rows[:1500], rows[1500:]
    write_spans(store, first)
    mine, versions = _per_org(first), _versions(store)
    gone = first[0]
    store.client.command(
        f"DELETE FROM {store.table('spans')} WHERE span_id = %(span)s",
        parameters={"span": gone["span_id"]},
    )
    # another writer stores one of the next batch's spans in the same org
    other = next(r for r in rest if r["org_id"] == gone["org_id"])
    write_spans(store, [other])
    counts = store.client.query(f"SELECT count() FROM {store.table('spans')}").result_rows
    assert counts[0][0] == len(first)  # as many rows as this write inserted
    assert not only_written_here(store, rest, mine, _kept, versions)


def test_each_once_over_spans_already_stored_writes_only_the_new(store):
    rows = demo_rows(3000)
    assert write_spans(store, rows[:1000]) == 1000
    assert write_spans(store, rows, batch_size=700, each_once=True) == len(rows) - 1000
    (count,) = store.client.query(f"SELECT count() FROM {store.table('spans')}").result_rows[0]
    assert count == len(rows)
