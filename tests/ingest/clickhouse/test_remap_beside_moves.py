"""`remap` on the span store beside ingest's wrapper moves (`wrapper_moves.py`,
`wrapper_move_journal.py`): a move left pending by a failed batch is taken in by remap's write
turn before remap writes anything of the org (the journal's rule: nothing of the org is written
between), and a wrapper that stops counting while remap's flags walk runs (its late call, or a
new wrapper stored with its call) is not flagged back as an LLM call from the walk's earlier
read. Every grain against polars over the spans stored, and the flags against the rule."""

from __future__ import annotations

from contextlib import contextmanager
from datetime import timedelta

import pytest

from observatory_core.ingest import remap_span_store, to_clickhouse
from observatory_core.ingest.remap import remap
from observatory_core.storage.clickhouse import rewrite_spans
from observatory_core.storage.clickhouse import wrapper_move_journal as move_journal
from tests.helpers import child_of, make_org
from tests.ingest.clickhouse.test_late_llm_call_resends import (
    _every_grain_as_polars,
    _flags_follow_the_rule,
    _plain_call,
    _refused,
)
from tests.ingest.clickhouse.test_late_llm_calls import (
    T0,
    _extremes_applied,
    _first_batches,
    _reference,
    _wrapper,
)


@pytest.fixture(scope="module")
def first_batches(ch_ingest) -> dict[str, tuple]:
    """Both tests' orgs' first batches, written as one (`_first_batches`)."""
    slugs = ["remap-pending-move", "remap-walk-race"]
    return _first_batches(ch_ingest.store, ch_ingest.engine, slugs)


def test_a_pending_move_is_taken_in_before_remap_rebuilds_its_day(ch_ingest, first_batches):
    """The batch of late calls is refused at its move's minute insert (the move journaled,
    pending: its minute rows and the negative rows of the hour's and day's tables to send).
    Remap then rebuilds the wrappers' day from the spans; the org's next batch must not send
    the move's negative rows onto the rebuilt day (the hour and day would lose the wrappers'
    key's other spans). The TTL's span of the rebuilt (project, day) is not counted after the
    rebuild (docs/scale.md, "Known gaps"); the other project's is."""
    engine, store = ch_ingest.engine, ch_ingest.store
    org, (main, _), first, later, gone, _ = first_batches["remap-pending-move"]
    _refused(store, engine, later, "_insert", step_runs=False)
    assert len(move_journal.pending(store, [org])) == 1
    remap(engine, org_id=org)
    other = _plain_call(org, main)
    assert to_clickhouse.write_spans(store, engine, [other]) == 1
    assert move_journal.pending(store, [org]) == []
    _extremes_applied(store)
    deleted = gone[0]  # of the rebuilt project's day; gone[1] is of the other project
    kept = [r for r in first if r["span_id"] != deleted]
    ref = _reference(kept + later + [other])
    _every_grain_as_polars(store, org, ref)
    _flags_follow_the_rule(store, org, ref)


def test_a_wrapper_settled_during_the_flags_walk_keeps_its_flag(
    ch_ingest, first_batches, monkeypatch
):
    """Once the flags walk has read which traces hold a call below a wrapper, ingest stores a
    late call under a counted wrapper (its move clears the flag) and a new wrapper with its
    call (stored not counted). The walk's pages read both later: neither is flagged back as an
    LLM call, every grain as polars finds it."""
    engine, store = ch_ingest.engine, ch_ingest.store
    org, (main, _), first, later, gone, _ = first_batches["remap-walk-race"]
    assert to_clickhouse.write_spans(store, engine, later) == len(later)
    waiting = _wrapper(org, main, T0 + timedelta(hours=7), 300.0, 0.01, model="gpt-4o-mini")
    assert to_clickhouse.write_spans(store, engine, [waiting]) == 1
    call = child_of(waiting, T0 + timedelta(hours=7, seconds=1), model="gpt-4o-mini",
                    provider="openai", duration_ms=250.0, input_tokens=100, output_tokens=20,
                    input_cost_usd=0.01)  # fmt: skip
    fresh = _wrapper(org, main, T0 + timedelta(hours=8), 700.0, 0.02, model="gpt-4o-mini")
    fresh_call = child_of(fresh, T0 + timedelta(hours=8, seconds=1), model="gpt-4o-mini",
                          provider="openai", duration_ms=650.0, input_tokens=100,
                          output_tokens=20, input_cost_usd=0.02)  # fmt: skip
    real = remap_span_store._wrapped

    def then_ingest(store_, org_id):
        found = real(store_, org_id)
        assert to_clickhouse.write_spans(store, engine, [call, fresh, fresh_call]) == 3
        return found

    monkeypatch.setattr(remap_span_store, "_wrapped", then_ingest)
    remap(engine, org_id=org)
    monkeypatch.undo()
    _extremes_applied(store)
    ref = _reference(first + later + [waiting, call, fresh, fresh_call])  # nothing rebuilt
    flags = dict(zip(ref["span_id"], ref["llm_call"], strict=True))
    assert not flags[waiting["span_id"]] and not flags[fresh["span_id"]]
    _flags_follow_the_rule(store, org, ref)
    _every_grain_as_polars(store, org, ref)


def test_no_wrapper_is_moved_from_an_older_copy_while_it_is_deleted(ch_ingest, monkeypatch):
    """Remap flags a counted wrapper as what it is (a call below it) and rebuilds its day; the
    older copy, still flagged, is deleted by a queued delete the engine takes a while to apply
    (its merges stopped here, as a busy server's). A late call under the wrapper written as
    soon as remap lets the turn go after the rebuild must not find the older copy still
    flagged: it would move the wrapper out of the rebuilt rows a second time (the other span
    of its key lost, the wrapper counted twice among the rows keyed false)."""
    engine, store = ch_ingest.engine, ch_ingest.store
    org, (main,) = make_org(engine, "remap-older-copy", ("main",))
    wrapper = _wrapper(org, main, T0 + timedelta(seconds=1), 500.0, 0.01)
    same_key = _wrapper(org, main, T0 + timedelta(seconds=20), 700.0, 0.02)
    call = child_of(wrapper, T0 + timedelta(seconds=2), model="gpt-4o", provider="openai",
                    duration_ms=400.0, input_tokens=100, output_tokens=20,
                    input_cost_usd=0.01)  # fmt: skip
    late = child_of(wrapper, T0 + timedelta(seconds=3), model="gpt-4o", provider="openai",
                    duration_ms=300.0, input_tokens=50, output_tokens=10,
                    input_cost_usd=0.005)  # fmt: skip
    assert to_clickhouse.write_spans(store, engine, [wrapper, same_key, call]) == 3
    store.client.command(  # as stored before the rule: flagged (the rollups as counted)
        f"ALTER TABLE {store.table('spans')} UPDATE llm_call = true "
        "WHERE org_id = %(org)s AND span_id = %(span)s",
        parameters={"org": org, "span": wrapper["span_id"]},
        settings={"mutations_sync": 2},
    )
    spans = store.table("spans")
    written: list[int] = []
    rebuilt: list[bool] = []
    real_turn = rewrite_spans.Rewriter._turn
    real_days, real_wait = rewrite_spans.rebuild_days, rewrite_spans.wait_deleted

    def rebuild_days(*args):
        store.client.command(f"SYSTEM STOP MERGES {spans}")  # the older copies' delete waits
        real_days(*args)
        rebuilt.append(True)

    def wait_deleted(*args):
        store.client.command(f"SYSTEM START MERGES {spans}")
        real_wait(*args)

    @contextmanager
    def turn(self):
        with real_turn(self):
            yield
        if rebuilt and not written:  # the first moment the turn is let go after the rebuild
            written.append(to_clickhouse.write_spans(store, engine, [late]))

    monkeypatch.setattr(rewrite_spans, "rebuild_days", rebuild_days)
    monkeypatch.setattr(rewrite_spans, "wait_deleted", wait_deleted)
    monkeypatch.setattr(rewrite_spans.Rewriter, "_turn", turn)
    try:
        assert remap(engine, org_id=org).changed == 0
    finally:
        monkeypatch.undo()
        store.client.command(f"SYSTEM START MERGES {spans}")
    assert written == [1]
    _extremes_applied(store)
    ref = _reference([wrapper, same_key, call, late])
    _flags_follow_the_rule(store, org, ref)
    _every_grain_as_polars(store, org, ref)
