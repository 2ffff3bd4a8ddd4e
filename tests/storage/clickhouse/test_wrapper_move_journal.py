"""The wrapper moves' journal (`storage/clickhouse/wrapper_move_journal.py`): what its read
leaves out is what the table's TTL deletes, judged by the same expression."""

from __future__ import annotations

from datetime import UTC, timedelta

from observatory_core.storage.clickhouse import wrapper_move_journal as journal
from observatory_core.storage.clickhouse.layout import JOURNAL_DAYS
from observatory_core.storage.clickhouse.wrapper_move_reads import Wrapper


def test_a_move_the_ttl_has_expired_is_not_read_in_its_last_second(chdb_session):
    """The TTL truncates `begun_at` to the second (`toDateTime`): a move begun at the last
    microsecond of the second that expires now is deleted by the TTL, so it is not read as
    pending either (a read by the exact `begun_at` kept it for the rest of that second, its
    newest row possibly deleted first). The row is kept (the TTL's merges stopped), and the
    TTL's expression over it says expired. (Should the second turn between the two reads,
    the old read left it out too: the test then passes either way, it never fails falsely.)"""
    store = chdb_session.store("journal_ttl")
    store.client.command(f"SYSTEM STOP TTL MERGES {store.table(journal.TABLE)}")  # kept to see
    try:
        ((second,),) = store.client.query(
            f"SELECT toDateTime(now(), 'UTC') - INTERVAL {JOURNAL_DAYS} DAY"
        ).result_rows
        begun = second.replace(tzinfo=UTC) + timedelta(microseconds=999_999)
        at = begun + timedelta(days=JOURNAL_DAYS)
        w = Wrapper(3, "a" * 32, "b" * 16, at)
        journal.record(store, journal.Entry(7, {w: ()}, begun_at=begun))
        found = journal.pending(store, [7])
        ((rows, expired),) = store.client.query(
            "SELECT count(), countIf(toDateTime(begun_at) + INTERVAL "
            f"{JOURNAL_DAYS} DAY <= now()) FROM {store.table(journal.TABLE)} WHERE org_id = 7"
        ).result_rows
        assert (rows, expired) == (1, 1)
        assert found == []
    finally:
        chdb_session.drop(store)
