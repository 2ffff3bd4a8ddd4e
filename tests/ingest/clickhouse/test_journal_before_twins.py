"""A wrapper move journaled by the code before twins were restated (the store upgraded while a
move was pending: its state without `sets`, the plan without `added`, trace totals or actors,
each count's bucket as plain text) is finished by the new code's take-in as it was begun:
every grain as polars finds it (`storage/clickhouse/wrapper_move_journal.py`)."""

from __future__ import annotations

import json

import pytest

from observatory_core.ingest import to_clickhouse
from observatory_core.storage.clickhouse import wrapper_move_journal as move_journal
from tests.ingest.clickhouse.test_late_llm_call_resends import (
    FAILURES,
    _every_grain_as_polars,
    _flags_follow_the_rule,
    _refused,
)
from tests.ingest.clickhouse.test_late_llm_calls import (
    _extremes_applied,
    _first_batches,
    _reference,
)


def _as_before_twins(state: str) -> str:
    """The state as `wrapper_move_journal._state` wrote it before twins were restated
    (7c9a817): no `sets`; a plan of rows, finest and emptied; `before` buckets as text."""
    raw = json.loads(state)
    assert raw.pop("sets") is None  # a wrapper's move
    if raw["plan"] is not None:
        raw["plan"] = {k: raw["plan"][k] for k in ("rows", "finest", "emptied")}
    raw["before"] = [[b["t"], k, n] for b, k, n in raw["before"]]
    return json.dumps(raw)


def _rewrite_newest(store, org: int) -> None:
    """The org's pending move's newest state rewritten as the old code wrote it (a row of a
    later step, the one read)."""
    (entry,) = move_journal.pending(store, [org])
    ((state,),) = store.client.query(
        f"SELECT argMax(state, step) FROM {store.table(move_journal.TABLE)} "
        "WHERE org_id = %(org)s AND move_id = %(move)s",
        parameters={"org": org, "move": entry.move_id},
    ).result_rows
    row = [org, entry.move_id, entry.begun_at, entry.step + 1, 0, _as_before_twins(state)]
    store.client.insert(
        store.table(move_journal.TABLE),
        [row],
        column_names=["org_id", "move_id", "begun_at", "step", "done", "state"],
    )
    (again,) = move_journal.pending(store, [org])
    assert again.sets is None and (again.plan is None or again.plan.added is None)


def _slug(step: str, step_runs: bool) -> str:
    return "old-journal" + step.replace("_", "-") + ("-ran" if step_runs else "")


@pytest.fixture(scope="module")
def first_batches(ch_ingest) -> dict[str, tuple]:
    """Each test's org's first batch, written as one (`_first_batches`)."""
    slugs = [_slug(step, runs) for step, runs in FAILURES]
    return _first_batches(ch_ingest.store, ch_ingest.engine, slugs)


@pytest.mark.parametrize(("step", "step_runs"), FAILURES)
def test_a_move_journaled_before_twins_is_finished_by_the_new_code(
    ch_ingest, first_batches, step, step_runs
):
    """A wrapper move failing at each step (the minute insert refused; landed, its answer
    lost; at the extremes; at the flags), its journal then read as the old code left it: the
    resend finishes it, adding nothing twice."""
    engine, store = ch_ingest.engine, ch_ingest.store
    org, _, first, later, _, _ = first_batches[_slug(step, step_runs)]
    _refused(store, engine, later, step, step_runs=step_runs)
    _rewrite_newest(store, org)
    assert to_clickhouse.write_spans(store, engine, later) == 0  # the resend
    assert move_journal.pending(store, [org]) == []
    _extremes_applied(store)
    ref = _reference(first + later)
    _every_grain_as_polars(store, org, ref)
    _flags_follow_the_rule(store, org, ref)
