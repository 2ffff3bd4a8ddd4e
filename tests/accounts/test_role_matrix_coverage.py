"""The role matrix is not thinner than the app (see matrix.py): every path it knows is walked
by one of the test_role_matrix_*.py files, and every field on every path it can appear on."""

from __future__ import annotations

from observatory_core.metrics.catalog import DIMENSION_FIELDS
from observatory_core.reports.live import SPAN_FIELDS as LIVE_FIELDS
from observatory_core.semantic.field_lookups import FIELD_NEEDS
from observatory_core.traces.query import SORTS
from tests.accounts import (
    test_role_matrix_exports,
    test_role_matrix_live_and_alerts,
    test_role_matrix_metrics,
    test_role_matrix_traces,
)
from tests.accounts.matrix import CASES, FIELDS, FILTERS_OF, METRIC_OF, PATHS


def test_every_path_is_walked_by_exactly_one_file():
    walks = [
        m.WALKS
        for m in (
            test_role_matrix_exports,
            test_role_matrix_live_and_alerts,
            test_role_matrix_metrics,
            test_role_matrix_traces,
        )
    ]
    named = [path for w in walks for path in w]
    assert sorted(named) == sorted(PATHS)


def test_every_restricted_field_is_walked_on_every_path_it_can_appear_on():
    """The matrix is not thinner than the app: sorts, filters, metrics and group-bys that read
    a restricted field are all covered, and no group-by dimension is restricted."""
    walked = {(f, p) for _, f, p in CASES}
    for field in FIELDS:
        for path in ("list", "export_create", "export_download", "detail"):
            assert (field, path) in walked
    live = {f for f in FIELDS if f in LIVE_FIELDS or FILTERS_OF[f]}
    assert live <= {f for f, p in walked if p == "live"} and "total_cost_usd" in live
    assert {f for f in FIELDS if f in SORTS} <= {f for f, p in walked if p == "sort"}
    assert {f for f in FIELDS if FILTERS_OF[f]} <= {f for f, p in walked if p == "filter"}
    assert set(METRIC_OF) <= {f for f, p in walked if p == "metric"}
    assert not set(DIMENSION_FIELDS.values()) & set(FIELD_NEEDS)
