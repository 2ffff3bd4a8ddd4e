"""Wrapper moves refused as the store's failure, never the rows'.

An org whose wrapper move is stuck (its own mutation keeps failing) costs the other orgs
of the process nothing: its move's mutations are waited on before the process's write lock,
and once that wait has run out the org's batches are refused at once for a while (503, a
sentence saying its earlier correction is not finished), without waiting again
(`storage/clickhouse/wrapper_move_holds.py`: `ready`, `wait_for_earlier`). A move that fails
after its batch's insert answers 503, so the batch is retried whole, not split and its stored
spans reported refused (`finish_batch`, `ingest/isolate.py`)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from observatory_core.base.errors import DatabaseUnavailable
from observatory_core.ingest import persist, to_clickhouse
from observatory_core.ingest.isolate import write_isolating
from observatory_core.storage.clickhouse import wrapper_move_holds, wrapper_move_plan, wrapper_moves
from observatory_core.storage.clickhouse import wrapper_move_journal as move_journal
from observatory_core.storage.clickhouse import wrapper_move_waits as waits
from observatory_core.storage.clickhouse.migrate_spans import migrate_spans
from tests.helpers import make_org
from tests.ingest.clickhouse.test_late_llm_call_resends import (
    _call_under,
    _every_grain_as_polars,
    _flags_follow_the_rule,
    _plain_call,
    _refused,
    _stored_ids,
    _wrapper_stored,
)
from tests.ingest.clickhouse.test_late_llm_calls import (
    T0,
    _extremes_applied,
    _reference,
    _wrapper,
)


def test_an_orgs_stuck_move_holds_back_no_other_org(ch_ingest):
    """Org A's move sends its flags' mutation, and a mutation of A's own spans named as the
    flags' would be keeps failing behind it: the move's wait runs out (logged, the batch
    stored). A's next batch, with a move of its own (which waits for the earlier move's
    mutations), waits for it outside the process's write lock, is refused (503),
    and A is held: its following batch is refused at once, with no wait. Org B's batch
    meanwhile is written and waits on none of A's rows. Once A's mutation is gone and the
    hold over, A's batch is written: every grain of A as polars finds it."""
    engine, store = ch_ingest.engine, ch_ingest.store
    a, (a_main,) = make_org(engine, "hold-stuck", ("main",))
    b, (b_main,) = make_org(engine, "hold-free", ("main",))
    w = _wrapper(a, a_main, T0 + timedelta(seconds=1), 500.0, 0.01)
    keep = _wrapper(a, a_main, T0 + timedelta(seconds=40), 40.0, 0.02, tokens=(7, 1))
    w2 = _wrapper(a, a_main, T0 + timedelta(minutes=20), 700.0, 0.02)
    assert to_clickhouse.write_spans(store, engine, [w, keep, w2]) == 3
    call, later = _call_under(w, 1, 400.0), _call_under(w2, 1, 600.0)  # a move each
    real_flags, real_left = wrapper_moves._clear_flags, waits.left

    def flags_then_stuck(store, org_id, wrappers, sets=None):
        real_flags(store, org_id, wrappers, sets)
        store.client.command(
            f"ALTER TABLE {store.table('spans')} UPDATE llm_call = false "
            f"WHERE org_id = {org_id} AND toUInt8(throwIf(org_id = {org_id}, 'stuck')) = 0",
            settings={"mutations_sync": 0},
        )

    polls: list[tuple[int, bool]] = []  # (org, whether the write lock was held) per poll
    patch = pytest.MonkeyPatch()
    patch.setattr(wrapper_move_holds, "WAIT_S", 0.3)
    patch.setattr(wrapper_moves, "FLAGS_WAIT_S", 0.3)
    try:
        patch.setattr(wrapper_moves, "_clear_flags", flags_then_stuck)
        assert to_clickhouse.write_spans(store, engine, [call]) == 1  # its wait ran out
        patch.setattr(wrapper_moves, "_clear_flags", real_flags)
        patch.setattr(
            waits,
            "left",
            lambda s, org, *rest: (
                polls.append((org, s.write_lock.locked())) or real_left(s, org, *rest)
            ),
        )
        with pytest.raises(DatabaseUnavailable, match="still being rewritten"):
            to_clickhouse.write_spans(store, engine, [later])
        assert polls and all(org == a for org, _ in polls)
        assert not any(locked for _, locked in polls)  # waited outside the write lock
        polls.clear()
        with pytest.raises(DatabaseUnavailable, match="not finished yet"):
            to_clickhouse.write_spans(store, engine, [later])
        assert polls == []  # held: refused at once
        other = _plain_call(b, b_main)
        assert to_clickhouse.write_spans(store, engine, [other]) == 1
        assert [org for org, _ in polls if org == a] == []
        assert _stored_ids(store, b) == {other["span_id"]}
        assert later["span_id"] not in _stored_ids(store, a)
    finally:
        patch.undo()
        store.client.command(
            "KILL MUTATION WHERE database = %(db)s AND command LIKE '%%throwIf%%'",
            parameters={"db": store.database},
        )
    with pytest.raises(DatabaseUnavailable, match="not finished yet"):  # still held
        to_clickhouse.write_spans(store, engine, [later])
    wrapper_move_holds._HELD.clear()  # the hold over
    assert to_clickhouse.write_spans(store, engine, [later]) == 1
    assert move_journal.pending(store, [a]) == []
    _extremes_applied(store)
    ref = _reference([w, keep, w2, call, later])
    _every_grain_as_polars(store, a, ref)
    _flags_follow_the_rule(store, a, ref)


def test_a_move_failing_after_the_insert_is_a_503_not_a_refused_span(ch_ingest):
    """The ingest path writes through `write_isolating`, which splits a batch the database
    refuses down to the rows refused. A one-span batch whose move fails after its insert
    (not a failure worth a retry in itself) is answered as the store's failure: raised, so
    503, not the span reported refused; the span is stored, and its resend stores nothing
    twice, refuses nothing, and finishes the move. Every grain as polars finds it."""
    engine, store = ch_ingest.engine, ch_ingest.store
    org, (main,) = make_org(engine, "refused-after", ("main",))
    w = _wrapper(org, main, T0 + timedelta(seconds=1), 500.0, 0.01)
    keep = _wrapper(org, main, T0 + timedelta(seconds=40), 40.0, 0.02, tokens=(7, 1))
    assert write_isolating(engine, [w, keep]).written == 2
    call = _call_under(w, 1, 400.0)
    real = wrapper_move_plan._settle_key
    patch = pytest.MonkeyPatch()
    patch.setattr(
        wrapper_move_plan,
        "_settle_key",
        lambda *a, **k: real(*a, **k) and (_ for _ in ()).throw(ValueError("not a retry")),
    )
    try:
        with pytest.raises(DatabaseUnavailable, match="could not yet move"):
            write_isolating(engine, [call])
    finally:
        patch.undo()
    assert call["span_id"] in _stored_ids(store, org)
    assert len(move_journal.pending(store, [org])) == 1
    again = write_isolating(engine, [call])
    assert (again.written, again.refused) == (0, {})
    assert move_journal.pending(store, [org]) == []
    _extremes_applied(store)
    ref = _reference([w, keep, call])
    _every_grain_as_polars(store, org, ref)
    _flags_follow_the_rule(store, org, ref)


def test_migrate_spans_takes_in_a_pending_move_before_its_spans(ch_ingest):
    """Taking in is the store's rule, not a caller's option: `migrate-spans` writes an org
    whose ingest batch left a move pending (the extremes failed), copying a span of the org
    from `DATABASE_URL`; its batch takes the move in first. Every grain as polars finds it
    over the spans stored, the wrappers' flags as the rule sets them."""
    engine, store = ch_ingest.engine, ch_ingest.store
    org, main, w, keep = _wrapper_stored(store, engine, "refused-then-migrated")
    call, copied = _call_under(w, 1, 400.0), _plain_call(org, main)
    _refused(store, engine, [call], "_settle_key", step_runs=True)
    with pytest.MonkeyPatch.context() as patch:  # the span into DATABASE_URL alone
        patch.setattr(persist, "span_store", lambda: None)
        assert persist.write_spans(engine, [copied]) == 1
    assert len(move_journal.pending(store, [org])) == 1
    report = migrate_spans(engine, store, org_ids=[org])
    assert report.copied == 1
    assert move_journal.pending(store, [org]) == []
    _extremes_applied(store)
    ref = _reference([w, keep, call, copied])
    _every_grain_as_polars(store, org, ref)
    _flags_follow_the_rule(store, org, ref)
