"""A stored twin deleted between the batch's read of the candidates and the read of its details
(the TTL, a fold of copies): it is no twin, and the new copy counts, as on a store where it was
never found (`ingest/span_store_twins.py`)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from observatory_core.ingest import span_store_twins, to_clickhouse
from observatory_core.storage.clickhouse import wrapper_move_journal as move_journal
from tests.helpers import child_of, make_org, span
from tests.ingest.clickhouse.test_twin_keeper import SAME
from tests.ingest.clickhouse.twin_figures import AT, _by_model_provider


def test_a_stored_twin_deleted_before_its_details_are_read_is_no_twin(ch_ingest):
    engine, store = ch_ingest.engine, ch_ingest.store
    org, (main,) = make_org(engine, "twin-gone", ("main",))
    stored = span(org, main, AT, **SAME, scope_name="lib.a", model="gpt-4o", provider="openai",
                  input_cost_usd=0.002, output_cost_usd=0.001)  # fmt: skip
    later = span(org, main, AT + timedelta(milliseconds=10), **SAME, scope_name="lib.b",
                 model="gpt-4o", provider="openai", input_cost_usd=0.003,
                 output_cost_usd=0.002)  # fmt: skip
    assert to_clickhouse.write_spans(store, engine, [stored]) == 1
    real = span_store_twins._pool_rows

    def read_then_delete(*args, **kwargs):
        rows = real(*args, **kwargs)
        store.client.command(
            f"ALTER TABLE {store.table('spans')} DELETE WHERE org_id = %(org)s "
            "AND span_id = %(span)s",
            parameters={"org": org, "span": stored["span_id"]},
            settings={"mutations_sync": 2},
        )
        return rows

    patch = pytest.MonkeyPatch()
    patch.setattr(span_store_twins, "_pool_rows", read_then_delete)
    try:
        assert to_clickhouse.write_spans(store, engine, [later]) == 1
    finally:
        patch.undo()
    ((aside,),) = store.client.query(
        f"SELECT duplicate_of FROM {store.table('spans')} WHERE org_id = %(org)s "
        "AND span_id = %(span)s",
        parameters={"org": org, "span": later["span_id"]},
    ).result_rows
    assert aside is None  # the new copy counts: its twin is gone
    assert move_journal.pending(store, [org]) == []
    # the raw path counts what the spans hold: the new copy alone
    assert _by_model_provider(store.engine, org, "raw") == [
        ("gpt-4o", "openai", 1, 0.005, 150, 0, pytest.approx(800.0))
    ]


def test_a_nested_twin_seconds_after_its_stored_parent_is_found_by_its_trace(ch_ingest):
    """A nested twin that starts 2 s after its stored parent is found only by the candidates'
    trace half (the near half reads 50 ms around each start), whose token-pair filter must
    pass the pair (120, 30) and not (30, 120): the call counts once, as the raw path reads it,
    and another call of the trace with other tokens is counted beside it."""
    engine, store = ch_ingest.engine, ch_ingest.store
    org, (main,) = make_org(engine, "twin-far-nested", ("main",))
    parent = span(org, main, AT, **SAME, scope_name="lib.a", model="gpt-4o", provider="openai",
                  input_cost_usd=0.002, output_cost_usd=0.001)  # fmt: skip
    other = child_of(parent, AT + timedelta(seconds=1), **dict(SAME, input_tokens=30,
                     output_tokens=120), scope_name="lib.b", model="gpt-4o", provider="openai",
                     input_cost_usd=0.001, output_cost_usd=0.002)  # fmt: skip
    assert to_clickhouse.write_spans(store, engine, [parent, other]) == 2
    child = child_of(parent, AT + timedelta(seconds=2), **SAME, scope_name="lib.b",
                     model="gpt-4o", provider="openai", input_cost_usd=0.002,
                     output_cost_usd=0.001)  # fmt: skip
    assert to_clickhouse.write_spans(store, engine, [child]) == 1
    rows = store.client.query(
        f"SELECT span_id, duplicate_of FROM {store.table('spans')} WHERE org_id = %(org)s",
        parameters={"org": org},
    ).result_rows
    counted = sorted(s for s, aside in rows if aside is None)
    assert len(rows) == 3 and counted == sorted([parent["span_id"], other["span_id"]])
    assert _by_model_provider(store.engine, org, "raw") == [
        ("gpt-4o", "openai", 2, 0.006, 300, 0, pytest.approx(800.0))
    ]
    assert _by_model_provider(store.engine, org, "rollup") == [  # p95 within a latency bin
        ("gpt-4o", "openai", 2, 0.006, 300, 0, pytest.approx(800.0, rel=0.021))
    ]
