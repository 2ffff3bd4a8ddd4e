"""A stored twin restated beside other spans of its trace or org (`test_twin_keeper.py`'s
cases and figures): a late LLM call under a stored wrapper in the same batch, a trace across a
month boundary, and spans of its trace the trace totals have not counted."""

from __future__ import annotations

from datetime import timedelta

import pytest

from observatory_core.ingest import dedup, to_clickhouse
from observatory_core.storage.clickhouse import layout, move_traces
from tests.helpers import child_of, make_org, span
from tests.ingest.clickhouse.test_late_llm_call_resends import _call_under
from tests.ingest.clickhouse.test_late_llm_calls import _reference, _wrapper
from tests.ingest.clickhouse.test_twin_keeper import SAME, _new_org
from tests.ingest.clickhouse.twin_figures import (
    AT,
    NOW,
    _ch_trace_totals,
    _on_sqlite,
    _polars,
    _same_figures,
    _traces,
    _write,
    new_sqlite,
)
from tests.storage.clickhouse.conftest import written_ago
from tests.storage.clickhouse.test_view_gaps import _views_failing


@pytest.fixture(scope="module")
def sqlite(tmp_path_factory):
    engine = new_sqlite(tmp_path_factory, "keeper-traces-sqlite")
    yield engine
    engine.dispose()


def test_a_twin_restated_beside_a_late_call_under_a_stored_wrapper(ch_ingest, sqlite):
    """One batch brings a stored twin's richer copy and a late LLM call under a stored wrapper
    of the same org: both moves run, one after the other (the twin's, then the wrapper's),
    each figure as SQLite's and polars'."""
    org, case = _new_org(ch_ingest, "keeper-and-wrapper", "separate")
    main = case.batches[0][0]["project_id"]
    w = _wrapper(org, main, AT + timedelta(seconds=20), 500.0, 0.01)
    call = _call_under(w, 1, 400.0)
    batches = [case.batches[0] + [w], case.batches[1] + [call]]
    _write(ch_ingest, batches)
    sqlite_org = _on_sqlite(sqlite, "keeper-and-wrapper", batches)
    _same_figures(ch_ingest.store, org, sqlite, sqlite_org, [*case.counted, w, call])


def test_a_twin_restated_in_a_trace_across_a_month_boundary(ch_ingest, sqlite):
    """The trace's root and a tool span start in one month, the stored copy (the trace's last
    end) and its richer nested twin in the next: the copy set aside, the trace's last end is
    computed again from its other spans in both months' partitions (`move_traces._starts`:
    the trace totals' first and last start bound the read); one that missed the root's
    month would leave the copy's end standing. Each figure as SQLite's and polars'."""
    month = NOW.replace(day=1, hour=0, minute=0)  # the month's first start
    if NOW - month < timedelta(minutes=1):  # its first minute: the copies would start after NOW
        month = (month - timedelta(days=1)).replace(day=1)
    org, (main,) = make_org(ch_ingest.engine, "keeper-month", ("main",))
    root = span(org, main, month - timedelta(seconds=10), service_name="svc", operation="agent",
                duration_ms=2000.0, user_id="u-root")  # fmt: skip
    tool = child_of(root, month - timedelta(seconds=5), service_name="svc", operation="tool",
                    duration_ms=100.0, input_cost_usd=0.0002, output_cost_usd=0.0)  # fmt: skip
    stored = child_of(root, month + timedelta(seconds=1), **dict(SAME, duration_ms=60_000.0),
                      scope_name="agent.lib", model="gpt-4o", provider="openai",
                      input_cost_usd=0.001, output_cost_usd=0.001)  # fmt: skip
    later = child_of(stored, month + timedelta(seconds=1, milliseconds=5), **SAME,
                     scope_name="openai.sdk", model="gpt-4o-2024-08-06", provider="openai",
                     input_cost_usd=0.004, output_cost_usd=0.002, input_text="q",
                     output_text="a")  # fmt: skip
    batches = [[root, tool, stored], [later]]
    patch = pytest.MonkeyPatch()
    patch.setattr(dedup, "LOOKBACK", NOW - month + timedelta(hours=1))  # the boundary's twins
    try:
        _write(ch_ingest, batches)
        sqlite_org = _on_sqlite(sqlite, "keeper-month", batches)
    finally:
        patch.undo()
    _same_figures(ch_ingest.store, org, sqlite, sqlite_org, [root, tool, later], around=month)


def _late_totals_row(store, row: dict) -> None:
    """`row`'s trace totals row as its view writes it (the view's SELECT over the stored span),
    landing late: its insert's views still running when the move read the key."""
    partials = layout.trace_total_partials()
    keys = ("org_id", "project_id", "trace_id")
    select = [f"spans.{k} AS {k}" for k in keys] + [
        f"{p.select} AS {p.column.name}" for p in partials
    ]
    names = [*keys, *(p.column.name for p in partials)]
    store.client.command(
        f"INSERT INTO {store.table('trace_totals')} ({', '.join(names)}) "
        f"SELECT {', '.join(select)} FROM {store.table('spans')} AS spans "
        "WHERE spans.org_id = %(org)s AND spans.project_id = %(project)s "
        "AND spans.trace_id = %(trace)s AND spans.span_id = %(span)s "
        "GROUP BY spans.org_id, spans.project_id, spans.trace_id",
        parameters={"org": row["org_id"], "project": row["project_id"],
                    "trace": row["trace_id"], "span": row["span_id"]},
    )  # fmt: skip


def test_a_copy_set_aside_beside_spans_the_trace_totals_have_not_counted(ch_ingest, sqlite):
    """Two stored copies (`_two_pairs`), each its trace's only span the totals count, set aside
    by a batch that also brings a later span of each trace, the trace totals' view failing for
    it (`view_gaps.py`'s premise): each trace keeps a span, so neither key is emptied, though
    those spans start outside the totals' known starts (`move_traces._others_left`). One
    span's row lands late (its view finishing after the move read the key): after the org's
    next write, that trace's totals are its span's, as SQLite's and polars' (a delete of the
    key took that row with it). Then, the gap settled and the batch sent again (the top-up),
    every figure as SQLite's and polars': the other key, left adding up to no span, took no
    extreme, so its top-up is its span's alone."""
    engine, store = ch_ingest.engine, ch_ingest.store
    org, case = _new_org(ch_ingest, "keeper-gap", "two-pairs")
    first, second = case.batches[0][:2]  # the stored copies, each alone in its trace
    late = child_of(first, AT + timedelta(minutes=2), service_name="svc", operation="tool",
                    duration_ms=100.0, input_cost_usd=0.0003, output_cost_usd=0.0,
                    status="error")  # fmt: skip
    gap = child_of(second, AT + timedelta(minutes=3), service_name="svc", operation="tool",
                   duration_ms=50.0, input_cost_usd=0.0001, output_cost_usd=0.0)  # fmt: skip
    later = case.batches[1] + [late, gap]
    _write(ch_ingest, case.batches[:1])
    real = move_traces.trace_mutations

    def landed_late(store, org_id, items, wrappers):
        _late_totals_row(store, late)
        return real(store, org_id, items, wrappers)

    with pytest.MonkeyPatch.context() as patch, written_ago():
        patch.setattr(move_traces, "trace_mutations", landed_late)
        with _views_failing(store, ("trace_totals_mv",)):
            _write(ch_ingest, [later])
    main = first["project_id"]
    plain = span(org, main, AT + timedelta(minutes=4), service_name="svc", model="gpt-4o",
                 provider="openai", duration_ms=90.0, input_tokens=3, output_tokens=1)  # fmt: skip
    assert to_clickhouse.write_spans(store, engine, [plain]) == 1  # the org's next write
    batches = [case.batches[0], later, [plain]]
    sqlite_org = _on_sqlite(sqlite, "keeper-gap", batches)
    trace = late["trace_id"]
    (want,) = _polars(_reference([late]).drop("id").to_dicts())[1]
    assert [t for t in _ch_trace_totals(store, org) if t[0] == trace] == [want]
    listed = [t for t in _traces(store.engine, org) if t[0] == trace]
    assert listed == [t for t in _traces(sqlite, sqlite_org) if t[0] == trace] == [want[:5]]
    assert to_clickhouse.write_spans(store, engine, later) == 0  # the resend tops the gap up
    _same_figures(store, org, sqlite, sqlite_org, [*case.counted, late, gap, plain])
