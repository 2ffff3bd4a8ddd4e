"""Trace detail: the tree in depth-first order, totals over the tree, scope and roles."""

import polars as pl
import pytest

from observatory_core.accounts.permissions import Role
from observatory_core.accounts.scope import Scope
from observatory_core.base.errors import PermissionDenied, UserError
from observatory_core.traces.detail import get_trace


def _biggest_trace(explorer):
    df = explorer["df"].filter(pl.col("org_id") == explorer["acme"])
    trace_id = (
        df.group_by("trace_id").len().sort(["len", "trace_id"], descending=True)["trace_id"][0]
    )
    return trace_id, df.filter(pl.col("trace_id") == trace_id)


def test_tree_order_depths_and_totals(explorer):
    trace_id, rows = _biggest_trace(explorer)
    detail = get_trace(
        explorer["engine"], Scope(org_id=explorer["acme"], role=Role.ADMIN), trace_id
    )
    assert len(detail.spans) == rows.height >= 4
    root = detail.spans[0]
    assert root["parent_span_id"] is None and root["depth"] == 0
    children = detail.spans[1:]
    assert all(c["depth"] == 1 and c["parent_span_id"] == root["span_id"] for c in children)
    assert [c["start_time"] for c in children] == sorted(c["start_time"] for c in children)
    assert detail.total_cost_usd == pytest.approx(rows["total_cost_usd"].sum())
    assert detail.total_tokens == rows["total_tokens"].sum()
    assert detail.error_count == rows.filter(pl.col("status") == "error").height
    assert detail.start == rows["start_time"].min().replace(tzinfo=detail.start.tzinfo)


def test_viewer_gets_no_costs_and_billing_no_trace(explorer):
    trace_id, _ = _biggest_trace(explorer)
    viewer = get_trace(
        explorer["engine"], Scope(org_id=explorer["acme"], role=Role.VIEWER), trace_id
    )
    assert viewer.total_cost_usd is None
    assert all("total_cost_usd" not in s and "input_cost_usd" not in s for s in viewer.spans)
    assert any(s.get("input_text") for s in viewer.spans)
    with pytest.raises(PermissionDenied):
        get_trace(explorer["engine"], Scope(org_id=explorer["acme"], role=Role.BILLING), trace_id)


def test_another_orgs_trace_is_not_found(explorer):
    trace_id, _ = _biggest_trace(explorer)
    assert (
        get_trace(explorer["engine"], Scope(org_id=explorer["globex"], role=Role.ADMIN), trace_id)
        is None
    )


@pytest.mark.parametrize("bad", ["", "xyz", "A" * 32, "' OR 1=1 --", "0" * 33])
def test_bad_trace_ids_are_refused(explorer, bad):
    with pytest.raises(UserError, match="not a trace id"):
        get_trace(explorer["engine"], Scope(org_id=explorer["acme"], role=Role.ADMIN), bad)


def test_a_huge_trace_is_cut_to_its_first_spans_with_totals_over_all(explorer, monkeypatch):
    from observatory_core.traces import detail as detail_module

    trace_id, rows = _biggest_trace(explorer)
    keep = rows.height - 2
    monkeypatch.setattr(detail_module, "MAX_DETAIL_SPANS", keep)
    detail = get_trace(
        explorer["engine"], Scope(org_id=explorer["acme"], role=Role.ADMIN), trace_id
    )
    first = rows.sort(["start_time", "id"]).head(keep)["span_id"].to_list()
    assert sorted(s["span_id"] for s in detail.spans) == sorted(first)
    assert detail.span_count == rows.height and detail.omitted == 2
    # the totals still cover every span of the trace
    assert detail.total_tokens == rows["total_tokens"].sum()
    assert detail.total_cost_usd == pytest.approx(rows["total_cost_usd"].sum())
    assert detail.end == rows["end_time"].max().replace(tzinfo=detail.end.tzinfo)
