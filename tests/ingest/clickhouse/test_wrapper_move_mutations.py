"""Wrapper moves beside other mutations of the engine: a move's deletes never leave a negative
row alone for a read, another org's failing mutations hold back no move, and a flag mutation
applied late is not moved twice (`storage/clickhouse/wrapper_moves.py`,
`wrapper_move_waits.py`; `test_late_llm_calls.py` has the scenario and its figures). Every
grain against polars over the spans stored."""

from __future__ import annotations

from datetime import timedelta

import pytest

from observatory_core.ingest import to_clickhouse
from observatory_core.storage.clickhouse import wrapper_move_holds, wrapper_moves
from observatory_core.storage.clickhouse import wrapper_move_waits as waits
from observatory_core.storage.clickhouse.restamp import settle as settle_mutations
from tests.helpers import make_org
from tests.ingest.clickhouse.test_late_llm_call_resends import _call_under
from tests.ingest.clickhouse.test_late_llm_calls import (
    DAY,
    GRAINS,
    KEYS,
    T0,
    _extremes_applied,
    _polars_rollup,
    _reference,
    _store_rollup,
    _wrapper,
)


def test_no_row_a_move_deletes_is_a_negative_row(ch_ingest):
    """Two moves of one key and hour: the first empties its wrapper's minute (its negative
    row into the hour's table), the second the other wrapper's minute and so the hour, whose
    rows it deletes. A read while that lightweight delete runs (some parts done, some not)
    sees what is left of them; none of them may be a negative row, which alone reads as
    2**64 - 1 spans (docs/span-store-internals.md, "Wrapper moves and their journal"): each DELETE's
    rows read as it is sent."""
    engine, store = ch_ingest.engine, ch_ingest.store
    org, (main,) = make_org(engine, "late-twice", ("main",))
    a = _wrapper(org, main, T0 + timedelta(seconds=1), 500.0, 0.01)
    b = _wrapper(org, main, T0 + timedelta(minutes=20), 700.0, 0.02)
    deleted: list[str] = []
    real = store.client.command
    coarse = [store.table(t) for t in ("rollup_1hour", "rollup_1day")]

    def merges(verb: str) -> None:  # as a busy server leaves parts unmerged a while
        for table in coarse:
            real(f"SYSTEM {verb} MERGES {table}")

    def small_merges_only(on: bool) -> None:  # the first move's mutations run, no merge
        for table in coarse:
            real(
                f"ALTER TABLE {table} MODIFY SETTING max_bytes_to_merge_at_max_space_in_pool = 1"
                if on
                else f"ALTER TABLE {table} RESET SETTING max_bytes_to_merge_at_max_space_in_pool"
            )

    assert to_clickhouse.write_spans(store, engine, [a, b]) == 2
    small_merges_only(True)
    try:
        assert to_clickhouse.write_spans(store, engine, [_call_under(a, 1, 400.0)]) == 1
        _extremes_applied(store)
        merges("STOP")
    finally:
        small_merges_only(False)
    ((negatives,),) = store.client.query(
        f"SELECT countIf(span_count >= 9223372036854775808) FROM {coarse[0]} "
        "WHERE org_id = %(org)s",
        parameters={"org": org},
    ).result_rows
    if not negatives:
        merges("START")
        pytest.skip("the engine merged the first move's negative row before the second move")

    def seen(statement, *args, **kwargs):
        if statement.startswith("DELETE FROM"):
            where = statement.split(" WHERE ", 1)[1]
            table = statement.split()[2]
            params = kwargs.get("parameters") or {}
            rows = store.client.query(
                f"SELECT span_count FROM {table} WHERE {where}", parameters=params
            ).result_rows
            deleted.extend(f"{table}: {n}" for (n,) in rows if n >= 2**63)
        if "UPDATE llm_call" in statement:  # the rollups' deletes all queued: they run now
            merges("START")
        return real(statement, *args, **kwargs)

    patch = pytest.MonkeyPatch()
    patch.setattr(store.client, "command", seen)
    try:
        assert to_clickhouse.write_spans(store, engine, [_call_under(b, 1, 600.0)]) == 1
    finally:
        patch.undo()
        merges("START")
    _extremes_applied(store)
    assert deleted == []
    ref = _reference([a, b, _call_under(a, 1, 400.0), _call_under(b, 1, 600.0)])
    for table, every in GRAINS.items():  # the hour and day add the negative instead
        got, want = _store_rollup(store, table, org), _polars_rollup(ref, every)
        assert got.select(KEYS).to_dicts() == want.select(KEYS).to_dicts(), table
        for column in ("spans", "tokens", "least", "most"):
            assert got[column].to_list() == want[column].to_list(), (table, column)


def test_another_orgs_failing_mutation_holds_back_no_move(ch_ingest):
    """Another org's mutations that keep failing, of its spans and of its rollup rows (as its
    own move's would look: `bucket_start = `), stuck ahead of every later mutation of the
    parts they fail on: this org's two moves of one key and hour (the second waiting for the
    first's mutations) are not held back and their batches not refused; every grain as polars
    finds it, and the wrappers' flags cleared."""
    engine, store = ch_ingest.engine, ch_ingest.store
    other, (elsewhere,) = make_org(engine, "late-stuck-other", ("main",))
    assert to_clickhouse.write_spans(store, engine, [_wrapper(other, elsewhere, T0, 1.0, 0.1)])
    fail = f"toUInt16(throwIf(org_id = {other}, 'stuck'))"
    store.client.command(
        f"ALTER TABLE {store.table('spans')} UPDATE retain_days = {fail} WHERE org_id = {other}",
        settings={"mutations_sync": 0},
    )
    for table, at in zip(GRAINS, (T0, T0.replace(minute=0), DAY), strict=True):
        store.client.command(
            f"ALTER TABLE {store.table(table)} UPDATE duration_min = toFloat64({fail}) "
            f"WHERE org_id = {other} AND bucket_start = toDateTime('{at:%Y-%m-%d %H:%M:%S}')",
            settings={"mutations_sync": 0},
        )
    try:
        org, (main,) = make_org(engine, "late-stuck", ("main",))
        a = _wrapper(org, main, T0 + timedelta(seconds=1), 500.0, 0.01)
        b = _wrapper(org, main, T0 + timedelta(minutes=20), 700.0, 0.02)
        calls = [_call_under(a, 1, 400.0), _call_under(b, 1, 600.0)]
        assert to_clickhouse.write_spans(store, engine, [a, b]) == 2
        for call in calls:  # the second move waits for the first's mutations of the org
            assert to_clickhouse.write_spans(store, engine, [call]) == 1
        for table in ("spans", *GRAINS):  # still failing: the other org's rows not rewritten
            ((reason,),) = store.client.query(
                "SELECT countIf(latest_fail_reason LIKE '%%stuck%%') FROM system.mutations "
                "WHERE database = %(db)s AND table = %(t)s AND NOT is_done",
                parameters={"db": store.database, "t": table},
            ).result_rows
            assert reason, table
            # this org's own, held back on the other org's parts, are the ones waited on
            marker = wrapper_moves.FLAGS if table == "spans" else wrapper_moves.BUCKET
            ((mine,),) = store.client.query(
                "SELECT count() FROM system.mutations WHERE database = %(db)s "
                f"AND table = %(t)s AND NOT is_done AND {waits.own(org, marker)}",
                parameters={"db": store.database, "t": table},
            ).result_rows
            assert mine, table
            assert waits.left(store, org, table, marker) == 0, table
        flagged = store.client.query(
            f"SELECT span_id FROM {store.table('spans')} WHERE org_id = %(org)s AND llm_call",
            parameters={"org": org},
        ).result_rows
        assert sorted(s for (s,) in flagged) == sorted(c["span_id"] for c in calls)
        ref = _reference([a, b, *calls])
        for table, every in GRAINS.items():
            got, want = _store_rollup(store, table, org), _polars_rollup(ref, every)
            assert got.select(KEYS).to_dicts() == want.select(KEYS).to_dicts(), table
            for column in ("spans", "tokens", "least", "most"):
                assert got[column].to_list() == want[column].to_list(), (table, column)
    finally:
        store.client.command(
            "KILL MUTATION WHERE database = %(db)s AND command LIKE '%%throwIf%%'",
            parameters={"db": store.database},
        )


def test_a_late_flag_mutation_applied_during_the_next_move_adds_nothing_twice(ch_ingest):
    """review5: the first move's flag mutation not applied when its batch is answered (the
    engine's mutations held back: its wait timed out, logged); a second late call under the
    same wrapper finds it still flagged, and the flag mutation applies as that move begins its
    wait for the org's earlier mutations (the old code had read the wrappers' rows before it,
    and so moved the wrapper again: `_landed` judges by the flags). Every grain as polars finds it, no key
    counting a wrapper twice or a negative number of spans."""
    engine, store = ch_ingest.engine, ch_ingest.store
    org, (main,) = make_org(engine, "late-flag-race", ("main",))
    a = _wrapper(org, main, T0 + timedelta(seconds=1), 500.0, 0.01)
    b = _wrapper(org, main, T0 + timedelta(seconds=20), 700.0, 0.02)  # keeps a's minute
    assert to_clickhouse.write_spans(store, engine, [a, b]) == 2
    spans = store.table("spans")
    first, second = _call_under(a, 1, 400.0), _call_under(a, 2, 300.0)
    patch = pytest.MonkeyPatch()
    patch.setattr(wrapper_moves, "FLAGS_WAIT_S", 0.5)
    store.client.command(f"SYSTEM STOP MERGES {spans}")  # the flag mutation held back
    try:
        assert to_clickhouse.write_spans(store, engine, [first]) == 1  # answered, logged
        ((flagged,),) = store.client.query(
            f"SELECT countIf(llm_call) FROM {spans} WHERE org_id = %(org)s AND span_id = %(s)s",
            parameters={"org": org, "s": a["span_id"]},
        ).result_rows
        assert flagged == 1  # the batch answered with the flag not cleared yet
        real = wrapper_moves.wait
        started: list[bool] = []

        def applied_now(*args, **kwargs):  # the engine gets to it as the move's wait begins
            if not started:
                started.append(True)
                store.client.command(f"SYSTEM START MERGES {spans}")
                assert settle_mutations(store, 60, ("spans",), "1")
            return real(*args, **kwargs)

        patch.setattr(wrapper_moves, "wait", applied_now)
        patch.setattr(wrapper_move_holds, "wait", applied_now)  # the earlier moves' wait
        assert to_clickhouse.write_spans(store, engine, [second]) == 1
    finally:
        patch.undo()
        store.client.command(f"SYSTEM START MERGES {spans}")
    _extremes_applied(store)
    ref = _reference([a, b, first, second])
    for table, every in GRAINS.items():
        raw = store.client.query(
            "SELECT bucket_start, toString(model), llm_call, sum(span_count) AS spans "
            f"FROM {store.table(table)} WHERE org_id = %(org)s "
            "GROUP BY bucket_start, model, llm_call ORDER BY ALL",
            parameters={"org": org},
        ).result_rows
        assert all(n < 2**63 for *_, n in raw), (table, raw)  # no negative figure
        got = _store_rollup(store, table, org)
        want = _polars_rollup(ref, every)
        assert got.select(KEYS).to_dicts() == want.select(KEYS).to_dicts(), (table, raw)
        assert got["spans"].to_list() == want["spans"].to_list(), (table, raw)
