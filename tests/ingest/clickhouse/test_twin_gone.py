"""A stored twin deleted between the batch's read of the candidates and the read of its details
(the TTL, a fold of copies): it is no twin, and the new copy counts, as on a store where it was
never found (`ingest/span_store_twins.py`)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from observatory_core.ingest import span_store_twins, to_clickhouse
from observatory_core.storage.clickhouse import wrapper_move_journal as move_journal
from tests.helpers import make_org, span
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
