"""/metrics on the chosen store, from rollups, raw spans and trace totals, and the Metrics
page's loader."""

from __future__ import annotations

import pytest

from tests.api.span_store.conftest import FORTNIGHT, SPAN_WINDOW, STORE_COST, STORE_TRACES, _traces
from tests.helpers import admin_scope
from tests.metrics.reference import reference_metrics
from tests.traces.conftest import NOW


@pytest.mark.parametrize("group_by", ["", "&group_by=model", "&group_by=user_id"])
def test_metrics_read_the_chosen_store(client, routed, group_by):
    """From rollups (no group-by, by model) and from raw spans (by user, which rollups do not
    carry): the span store's answer holds its own tool call, never the twin it set aside."""
    client, _, on_store = client
    series = ("span_count.count", "request_count.count", "total_cost.sum", "duration_ms.max")
    query = "".join(f"&series={s}" for s in series)
    got = client.get(f"/metrics?bucket=none&tz=UTC&{SPAN_WINDOW}{query}{group_by}")
    assert got.status_code == 200, got.text
    data = got.json()["data"]
    keys = (group_by.split("=")[1],) if group_by else ()
    assert data["source"] == ("raw" if "user_id" in group_by else "rollup")
    want = reference_metrics(routed["sql_df"], FORTNIGHT, NOW, routed["acme"], series, keys, None)
    rows = data["rows"]
    call, cost = (1, STORE_COST) if on_store else (0, 0.0)  # the LLM call only it holds
    assert sum(r["request_count.count"] for r in rows) == want["request_count.count"].sum() + call
    assert abs(sum(r["total_cost.sum"] for r in rows) - want["total_cost.sum"].sum() - cost) < 1e-9
    assert max(r["duration_ms.max"] or 0 for r in rows) == want["duration_ms.max"].max()
    extra = 2 if on_store else 0  # the tool call and the LLM call; the twin never
    assert sum(r["span_count.count"] for r in rows) == want["span_count.count"].sum() + extra


# every status: the same traces, read from the spans (a filter trace totals cannot answer)
EVERY_STATUS = "".join(f"&statuses={s}" for s in ("ok", "error", "unset"))


@pytest.mark.parametrize(("spans", "source"), [("", "rollup"), (EVERY_STATUS, "raw")])
def test_trace_metrics_read_the_chosen_store(client, routed, spans, source):
    """From the trace totals and from the spans: the span store's count holds its own traces."""
    client, _, on_store = client
    got = client.get(f"/metrics?bucket=none&series=trace_count&{SPAN_WINDOW}{spans}")
    assert got.status_code == 200, got.text
    assert got.json()["data"]["source"] == source
    (row,) = got.json()["data"]["rows"]
    want = _traces(routed["sql_df"], routed["acme"], FORTNIGHT.start, NOW)
    assert row["trace_count.count"] == want + (STORE_TRACES if on_store else 0)


def test_the_metrics_pages_loader_reads_the_chosen_store(client, routed):
    """The Metrics page's (and the dashboards') loader takes the same seam (`ui/session.py`)."""
    import streamlit as st

    from observatory_core.metrics.query import MetricQuery
    from observatory_core.ui import cached

    _, _, on_store = client
    st.cache_data.clear()
    query = MetricQuery(series=("span_count.count",), filters=FORTNIGHT, bucket=None)
    got = cached.metrics(admin_scope(routed["acme"]), query).frame["span_count.count"].item()
    want = reference_metrics(
        routed["sql_df"], FORTNIGHT, NOW, routed["acme"], query.series, (), None
    )["span_count.count"].item()
    assert got == want + (2 if on_store else 0)
    st.cache_data.clear()
