"""Wrapper moves that fail part-way, and moves beside other mutations: the batch refused, its
move journaled and taken in by the org's next write (its resend, or any other batch), which
finishes it when its calls are stored and drops it when they are not, adding nothing twice;
another org's failing mutations holding back no move (`storage/clickhouse/wrapper_moves.py`,
`wrapper_move_journal.py`; `test_late_llm_calls.py` has the scenario and its figures). Every
grain against polars over the spans stored. Moves beside the engine's other mutations:
`test_wrapper_move_mutations.py`."""

from __future__ import annotations

from collections import Counter
from contextlib import contextmanager
from datetime import timedelta

import polars as pl
import pytest

from observatory_core.base.errors import DatabaseUnavailable
from observatory_core.ingest import to_clickhouse
from observatory_core.storage import latency_bins
from observatory_core.storage.clickhouse import view_gaps, wrapper_move_plan, wrapper_moves
from observatory_core.storage.clickhouse import wrapper_move_journal as move_journal
from tests.helpers import child_of, make_org, span
from tests.ingest.clickhouse.test_late_llm_calls import (
    DAY,
    GRAINS,
    KEYS,
    T0,
    _extremes_applied,
    _first_batches,
    _polars_rollup,
    _reference,
    _store_rollup,
    _wrapper,
)


class _Failed(RuntimeError):
    pass


@contextmanager
def _move_failed():
    """The batch's move failing after its insert: answered as the store's failure (503,
    retried), not the rows' (`wrapper_moves.finish_batch`)."""
    with pytest.raises(DatabaseUnavailable, match="could not yet move") as raised:
        yield
    assert isinstance(raised.value.__cause__, _Failed)


def _pending_refused():
    """A batch refused as its org's pending move fails again: the store's failure (503)."""
    return pytest.raises(DatabaseUnavailable, match="pending move")


def _refused(
    store, engine, batch: list[dict], step: str, *, step_runs: bool, refusal=_move_failed
) -> None:
    """Write `batch` with the move's `step` failing (after it ran, with `step_runs`): the
    batch is refused, as `refusal()` expects."""
    owner = wrapper_move_plan if step == "_settle_key" else wrapper_moves  # judged by the plan
    real = getattr(owner, step)

    def fail_after(*args, **kwargs):
        if step_runs:
            real(*args, **kwargs)
        raise _Failed(step)

    _refused_with(store, engine, batch, owner, step, fail_after, refusal)


def _refused_with(
    store, engine, batch: list[dict], owner, name: str, replacement, refusal=_move_failed
) -> None:
    """Write `batch` with `owner.name` replaced (by one that fails): the batch is refused, as
    `refusal()` expects (by default, its move failed after its insert)."""
    patch = pytest.MonkeyPatch()
    patch.setattr(owner, name, replacement)
    try:
        with refusal():
            to_clickhouse.write_spans(store, engine, batch)
    finally:
        patch.undo()


def _wrapper_stored(store, engine, slug: str) -> tuple[int, int, dict, dict]:
    """A new org's wrapper `w` and, in its minute and key, a second one that keeps the key
    (both stored): (org, project, w, keep)."""
    org, (main,) = make_org(engine, slug, ("main",))
    w = _wrapper(org, main, T0 + timedelta(seconds=1), 500.0, 0.01)
    keep = _wrapper(org, main, T0 + timedelta(seconds=40), 40.0, 0.02, tokens=(7, 1))
    assert to_clickhouse.write_spans(store, engine, [w, keep]) == 2
    return org, main, w, keep


def _stored_ids(store, org: int) -> set[str]:
    return {
        s
        for (s,) in store.client.query(
            f"SELECT span_id FROM {store.table('spans')} WHERE org_id = %(org)s",
            parameters={"org": org},
        ).result_rows
    }


def _bins(store, table: str, org: int) -> dict[tuple, dict[int, int]]:
    """Each key's latency bins, merged (bins adding up to none left out)."""
    rows = store.client.query(
        "SELECT bucket_start, project_id, toString(model), toString(operation), llm_call, "
        f"sumMap(latency_bins) FROM {store.table(table)} WHERE org_id = %(org)s "
        f"GROUP BY {', '.join(KEYS)}",
        parameters={"org": org},
    ).result_rows
    out = {}
    for *key, bins in rows:
        kept = {int(b): int(n) for b, n in bins.items() if n}
        if kept:
            out[(key[0].replace(tzinfo=None), *key[1:])] = kept
    return out


def _polars_bins(ref: pl.DataFrame, every: str) -> dict[tuple, dict[int, int]]:
    out: dict[tuple, Counter] = {}
    frame = ref.with_columns(
        pl.col("start_time").dt.truncate(every).alias("bucket_start"), pl.col("model").fill_null("")
    )
    for row in frame.iter_rows(named=True):
        key = (row["bucket_start"].replace(tzinfo=None), *(row[k] for k in KEYS[1:]))
        out.setdefault(key, Counter())[latency_bins.bin_of(row["duration_ms"])] += 1
    return {k: dict(v) for k, v in out.items()}


def _every_grain_as_polars(store, org: int, ref: pl.DataFrame) -> None:
    """Every grain's keys, span counts, tokens, cost, extremes and latency bins (each bin's
    count) as polars finds them over `ref`."""
    for table, every in GRAINS.items():
        got, want = _store_rollup(store, table, org), _polars_rollup(ref, every)
        assert got.select(KEYS).to_dicts() == want.select(KEYS).to_dicts(), table
        for column in ("spans", "tokens", "least", "most"):
            assert got[column].to_list() == want[column].to_list(), (table, column)
        assert got["cost"].to_list() == pytest.approx(want["cost"].to_list(), abs=1e-12), table
        assert _bins(store, table, org) == _polars_bins(ref, every), table


def _flags_follow_the_rule(store, org: int, ref: pl.DataFrame) -> None:
    """Each stored span's `llm_call` as the rule sets it over `ref`."""
    stored = dict(
        store.client.query(
            f"SELECT span_id, llm_call FROM {store.table('spans')} WHERE org_id = %(org)s",
            parameters={"org": org},
        ).result_rows
    )
    want = dict(zip(ref["span_id"], ref["llm_call"], strict=True))
    assert stored == {s: want[s] for s in stored}


def _fail_done(real):
    """`move_journal.record` failing at the record of a move done (after every statement)."""

    def record(store, entry):
        if entry.done:
            raise _Failed("record")
        real(store, entry)

    return record


# (step, whether it ran before the failure): the minute insert refused; landed with its answer
# lost (journaled as sent, not as landed); the extremes, after the inserts; the flags
FAILURES = [("_insert", False), ("_insert", True), ("_settle_key", True), ("_clear_flags", False)]
NEVER_RESENT = [("_insert", True), ("_settle_key", True)]


def _fail_slug(step: str, step_runs: bool) -> str:
    return "late-fail" + step.replace("_", "-") + ("-ran" if step_runs else "")


@pytest.fixture(scope="module")
def first_batches(ch_ingest) -> dict[str, tuple]:
    """The first batch of each test's org (by its slug) that starts from one, written as one
    batch with the TTL's spans deleted by one mutation (`_first_batches`)."""
    slugs = [_fail_slug(step, runs) for step, runs in FAILURES]
    slugs += ["late-fail-done", "late-never-stored"]
    slugs += ["late-never" + step.replace("_", "-") for step, _ in NEVER_RESENT]
    return _first_batches(ch_ingest.store, ch_ingest.engine, slugs)


@pytest.mark.parametrize(("step", "step_runs"), FAILURES)
def test_a_move_that_fails_part_way_is_finished_by_the_resend(
    ch_ingest, first_batches, step, step_runs
):
    """The store fails at the rollups' insert, after it (its answer lost), after the inserts
    (at the extremes) or at the flags: the batch is refused, its spans stored (the move runs
    after its insert), the move pending in the journal; the resend stores nothing new and
    finishes the move without adding anything twice: every grain as polars finds it."""
    engine, store = ch_ingest.engine, ch_ingest.store
    org, _, first, later, _, _ = first_batches[_fail_slug(step, step_runs)]
    _refused(store, engine, later, step, step_runs=step_runs)
    flagged = store.client.query(
        f"SELECT count() FROM {store.table('spans')} WHERE org_id = %(org)s AND llm_call",
        parameters={"org": org},
    ).result_rows[0][0]
    assert flagged == 9 + len(later)  # the calls stored, the wrappers (but the TTL's) flagged
    assert len(move_journal.pending(store, [org])) == 1
    assert to_clickhouse.write_spans(store, engine, later) == 0  # the resend
    assert move_journal.pending(store, [org]) == []
    _extremes_applied(store)
    ref = _reference(first + later)  # the TTL's two spans kept in the rollups, as counted
    _every_grain_as_polars(store, org, ref)
    _flags_follow_the_rule(store, org, ref)


def test_a_move_whose_done_record_fails_is_finished_once(ch_ingest, first_batches):
    """Every statement of the move sent, then the journal's record of it done fails: the
    resend finds it pending, each insert landed, and changes no figure."""
    engine, store = ch_ingest.engine, ch_ingest.store
    org, _, first, later, _, _ = first_batches["late-fail-done"]
    _refused_with(store, engine, later, move_journal, "record", _fail_done(move_journal.record))
    assert len(move_journal.pending(store, [org])) == 1
    assert to_clickhouse.write_spans(store, engine, later) == 0
    assert move_journal.pending(store, [org]) == []
    _extremes_applied(store)
    ref = _reference(first + later)  # the TTL's two spans kept in the rollups, as counted
    _every_grain_as_polars(store, org, ref)
    _flags_follow_the_rule(store, org, ref)


def _plain_call(org: int, project: int) -> dict:
    """An LLM call of another trace and day: a batch of the org with no move of its own."""
    return span(org, project, DAY + timedelta(hours=20), model="gpt-4o", provider="openai",
                duration_ms=90.0, input_tokens=3, output_tokens=1)  # fmt: skip


@pytest.mark.parametrize(("step", "step_runs"), NEVER_RESENT)
def test_a_batch_refused_and_never_resent_is_finished_by_the_orgs_next_batch(
    ch_ingest, first_batches, step, step_runs
):
    """The move fails after its insert (the answer lost, or at the extremes); the batch is
    never sent again. The org's next batch (a call of another trace and day) takes the move
    in first: every grain's counts, sums, extremes and latency bins as polars finds them over
    the spans stored, and the wrappers' flags as the rule sets them."""
    engine, store = ch_ingest.engine, ch_ingest.store
    org, (main, _), first, later, _, _ = first_batches["late-never" + step.replace("_", "-")]
    _refused(store, engine, later, step, step_runs=step_runs)
    other = _plain_call(org, main)
    assert to_clickhouse.write_spans(store, engine, [other]) == 1
    assert move_journal.pending(store, [org]) == []
    _extremes_applied(store)
    assert {r["span_id"] for r in later} <= _stored_ids(store, org)
    ref = _reference(first + later + [other])  # the TTL's two spans kept in the rollups
    # 12 counted: 5 of the 11 stopped counting, 5 calls and one more counting
    assert ref["llm_call"].sum() == 11 - 5 + 5 + 1
    _every_grain_as_polars(store, org, ref)
    _flags_follow_the_rule(store, org, ref)


def test_a_batch_whose_insert_fails_drops_its_journaled_move(ch_ingest, first_batches):
    """The batch's own insert fails (its move journaled, nothing of it run), and it is never
    sent again. The org's next batch drops the move (no call of it stored): the wrappers keep
    counting, every grain as polars finds it over the spans stored."""
    engine, store = ch_ingest.engine, ch_ingest.store
    org, (main, _), first, later, _, _ = first_batches["late-never-stored"]
    real = store.client.insert
    spans = store.table("spans")

    def refused(table, *args, **kwargs):
        if table == spans:
            raise _Failed("insert")
        return real(table, *args, **kwargs)

    _refused_with(
        store, engine, later, store.client, "insert", refused, lambda: pytest.raises(_Failed)
    )
    assert len(move_journal.pending(store, [org])) == 1
    other = _plain_call(org, main)
    assert to_clickhouse.write_spans(store, engine, [other]) == 1
    assert move_journal.pending(store, [org]) == []
    assert not {r["span_id"] for r in later} & _stored_ids(store, org)
    ref = _reference(first + [other])  # the TTL's two spans kept in the rollups
    _every_grain_as_polars(store, org, ref)
    _flags_follow_the_rule(store, org, ref)


def test_whole_traces_read_nothing_and_a_call_under_a_stored_span_reads_once(ch_ingest):
    """The common case's cost: a batch of whole traces (every call's ancestors in it) reads
    nothing more; a call whose parent is not in the batch, one read for its org."""
    engine, store = ch_ingest.engine, ch_ingest.store
    org, (main,) = make_org(engine, "late-reads", ("main",))
    agent = span(org, main, T0, operation="invoke_agent", name="agent")
    calls = [child_of(agent, T0 + timedelta(seconds=i), model="gpt-4o") for i in range(3)]
    reads = []
    real = to_clickhouse._stored_wrappers
    patch = pytest.MonkeyPatch()
    patch.setattr(to_clickhouse, "_stored_wrappers", lambda *a: reads.append(a[1]) or real(*a))
    try:
        assert to_clickhouse.write_spans(store, engine, [agent, *calls]) == 4
        assert reads == []
        late_call = child_of(agent, T0 + timedelta(seconds=9), model="gpt-4o")
        assert to_clickhouse.write_spans(store, engine, [late_call]) == 1
        assert reads == [org]
    finally:
        patch.undo()


def _call_under(wrapper: dict, seconds: int, duration: float) -> dict:
    return child_of(wrapper, wrapper["start_time"] + timedelta(seconds=seconds), model="gpt-4o",
                    provider="openai", duration_ms=duration, input_tokens=10, output_tokens=2,
                    input_cost_usd=0.001)  # fmt: skip


def test_a_span_of_the_wrappers_minute_between_the_failure_and_the_resend(ch_ingest):
    """The wrapper alone in its minute (emptied: its negative row into the hour) and the move
    failing after its insert; before the resend, a span of the same key and minute arrives in
    another batch, so the resend judges the minute kept: every grain as polars finds it."""
    engine, store = ch_ingest.engine, ch_ingest.store
    org, (main,) = make_org(engine, "late-between", ("main",))
    w = _wrapper(org, main, T0 + timedelta(seconds=1), 500.0, 0.01)  # alone in its minute
    z = _wrapper(org, main, T0 + timedelta(minutes=20), 700.0, 0.02)  # its key keeps the hour
    assert to_clickhouse.write_spans(store, engine, [w, z]) == 2
    call = _call_under(w, 1, 400.0)
    _refused(store, engine, [call], "_settle_key", step_runs=True)
    between = _wrapper(org, main, T0 + timedelta(seconds=30), 600.0, 0.03)  # another trace
    assert to_clickhouse.write_spans(store, engine, [between]) == 1  # takes the move in first
    assert to_clickhouse.write_spans(store, engine, [call]) == 0  # stored with its batch
    _extremes_applied(store)
    ref = _reference([w, z, call, between])
    for table, every in GRAINS.items():
        got, want = _store_rollup(store, table, org), _polars_rollup(ref, every)
        assert got.select(KEYS).to_dicts() == want.select(KEYS).to_dicts(), table
        assert got["spans"].to_list() == want["spans"].to_list(), table


@pytest.mark.parametrize(("step", "step_runs"), [("_insert", True), ("_settle_key", True)])
def test_another_wrappers_move_between_the_failure_and_the_resend(ch_ingest, step, step_runs):
    """Two wrappers of one minute and key, their latencies and tokens apart, a third span of
    the key keeping the minute. The move of the first fails after its insert (its answer
    lost, or at the extremes: the batch refused, the wrapper still flagged); before its
    resend, a batch with a late call under the second wrapper moves it (review5: the count
    guards took the first's row as the second's, and the resend added the first twice, a bin
    left at 2**64 - 1); then the resend. Every grain as polars finds it: spans, tokens,
    extremes and every latency bin's count."""
    engine, store = ch_ingest.engine, ch_ingest.store
    org, (main,) = make_org(engine, "late-two-between" + step.replace("_", "-"), ("main",))
    x = _wrapper(org, main, T0 + timedelta(seconds=1), 500.0, 0.01)
    y = _wrapper(org, main, T0 + timedelta(seconds=10), 3000.0, 0.05, tokens=(300, 60))
    keep = _wrapper(org, main, T0 + timedelta(seconds=40), 40.0, 0.02, tokens=(7, 1))
    assert to_clickhouse.write_spans(store, engine, [x, y, keep]) == 3
    first, second = _call_under(x, 1, 400.0), _call_under(y, 1, 2900.0)
    _refused(store, engine, [first], step, step_runs=step_runs)
    assert to_clickhouse.write_spans(store, engine, [second]) == 1  # the first's move taken in
    assert to_clickhouse.write_spans(store, engine, [first]) == 0  # the resend: stored
    _extremes_applied(store)
    ref = _reference([x, y, keep, first, second])
    for table, every in GRAINS.items():
        raw = store.client.query(
            "SELECT llm_call, toString(operation), sumMap(latency_bins) "
            f"FROM {store.table(table)} WHERE org_id = %(org)s GROUP BY ALL ORDER BY ALL",
            parameters={"org": org},
        ).result_rows
        assert all(n < 2**63 for *_, bins in raw for n in bins.values()), (table, raw)
        got, want = _store_rollup(store, table, org), _polars_rollup(ref, every)
        assert got.select(KEYS).to_dicts() == want.select(KEYS).to_dicts(), table
        for column in ("spans", "tokens", "least", "most"):
            assert got[column].to_list() == want[column].to_list(), (table, column)
    _every_grain_as_polars(store, org, ref)  # and each latency bin, the cost
    _flags_follow_the_rule(store, org, ref)


def test_on_chdb_the_journal_is_read_until_the_org_has_nothing_pending(ch_ingest):
    """chDB's folder is written by this process alone: an org's turn reads the journal until
    it finds nothing pending for it, then not again until a move of the org is journaled
    (`wrapper_move_journal.clean`); a failed move is read and finished at the next batch."""
    engine, store = ch_ingest.engine, ch_ingest.store
    org, (main,) = make_org(engine, "late-journal-reads", ("main",))
    reads: list[list[int]] = []
    real = move_journal.pending
    patch = pytest.MonkeyPatch()
    patch.setattr(move_journal, "pending", lambda s, orgs: reads.append(orgs) or real(s, orgs))
    try:
        w = _wrapper(org, main, T0 + timedelta(seconds=1), 500.0, 0.01)
        keep = _wrapper(org, main, T0 + timedelta(seconds=40), 40.0, 0.02, tokens=(7, 1))
        assert to_clickhouse.write_spans(store, engine, [w]) == 1
        assert to_clickhouse.write_spans(store, engine, [keep]) == 1
        assert reads == [[org]]  # the first batch's turn alone
        call = _call_under(w, 1, 400.0)
        _refused(store, engine, [call], "_settle_key", step_runs=True)
        other = _plain_call(org, main)
        assert to_clickhouse.write_spans(store, engine, [other]) == 1
        assert reads == [[org], [org]]  # read again: the move found and finished
        assert to_clickhouse.write_spans(store, engine, [dict(other, span_id="f" * 16)]) == 1
        assert reads == [[org], [org]]
    finally:
        patch.undo()
    _extremes_applied(store)
    ref = _reference([w, keep, call, other, dict(other, span_id="f" * 16)])
    _every_grain_as_polars(store, org, ref)
    _flags_follow_the_rule(store, org, ref)


def test_a_pending_move_that_fails_again_refuses_the_orgs_batch_as_unavailable(ch_ingest):
    """The move fails at the extremes, and again as the org's next batch takes it in: that
    batch is refused as the store's failure (503, retried: not split and refused row by row),
    its span not stored; once the store works, the next batch finishes the move and stores
    its span. Every grain as polars finds it."""
    engine, store = ch_ingest.engine, ch_ingest.store
    org, main, w, keep = _wrapper_stored(store, engine, "late-fails-again")
    call, other = _call_under(w, 1, 400.0), _plain_call(org, main)
    _refused(store, engine, [call], "_settle_key", step_runs=True)
    _refused(store, engine, [other], "_settle_key", step_runs=False, refusal=_pending_refused)
    assert other["span_id"] not in _stored_ids(store, org)
    assert to_clickhouse.write_spans(store, engine, [other]) == 1
    assert move_journal.pending(store, [org]) == []
    _extremes_applied(store)
    ref = _reference([w, keep, call, other])
    _every_grain_as_polars(store, org, ref)
    _flags_follow_the_rule(store, org, ref)


def test_a_rollup_insert_still_running_when_the_move_is_taken_in_is_not_sent_twice(ch_ingest):
    """On a server, the move's minute insert whose client gave up (a lock wait past the
    driver's 60 s) may still be running as the org's next batch takes the move in: judged by
    its counts then, it was sent again, and landed twice when the server finished it. That
    batch is refused (503) while the server lists an insert into the table; once the insert
    has landed, the next batch finishes the move. Every grain as polars finds it."""
    engine, store = ch_ingest.engine, ch_ingest.store
    org, main, w, keep = _wrapper_stored(store, engine, "late-insert-running")
    call, other = _call_under(w, 1, 400.0), _plain_call(org, main)
    real = wrapper_moves._insert
    held: list[tuple] = []  # the insert the server still runs, landed when the test says

    def gave_up(*args):
        held.append(args)
        raise _Failed("the client's wait ran out, not the server's insert")

    patch = pytest.MonkeyPatch()
    patch.setattr(wrapper_moves, "_insert", gave_up)
    # as system.processes would list it while the server runs it (none runs on chDB)
    patch.setattr(view_gaps, "insert_running", lambda s, table="spans": bool(held), raising=False)
    try:
        with _move_failed():
            to_clickhouse.write_spans(store, engine, [call])
        patch.setattr(wrapper_moves, "_insert", real)
        with pytest.raises(DatabaseUnavailable, match="still running an insert into rollup_1min"):
            to_clickhouse.write_spans(store, engine, [other])
    finally:
        patch.undo()
        for args in held:  # the server finishes the insert
            real(*args)
    assert to_clickhouse.write_spans(store, engine, [other]) == 1
    assert move_journal.pending(store, [org]) == []
    _extremes_applied(store)
    ref = _reference([w, keep, call, other])
    _every_grain_as_polars(store, org, ref)
    _flags_follow_the_rule(store, org, ref)
