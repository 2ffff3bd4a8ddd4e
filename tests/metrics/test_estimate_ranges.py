"""The estimates' count read one piece per grain, its
ranges or'ed (`metrics/estimate.py`, `Store.ors_time_ranges`), against one piece per segment
and against polars on raw rows, over ragged, aligned and short ranges, with filters and a
project scope, on SQLite, PostgreSQL and chDB."""

from __future__ import annotations

from datetime import timedelta

import polars as pl
import pytest

from observatory_core.filters.spec import FilterSpec
from observatory_core.metrics.catalog import Subject
from observatory_core.metrics.estimate import known_groups, spans_in_range
from observatory_core.storage.stores import store_for
from tests.helpers import admin_scope
from tests.reference import reference_llm_calls


def _ceil_minute(t):
    floor = t.replace(second=0, microsecond=0)
    return floor if floor == t else floor + timedelta(minutes=1)


RANGES = [  # (start, end) as offsets before now
    (timedelta(days=3, minutes=17, seconds=25), timedelta(seconds=13)),
    (timedelta(days=5, hours=3), timedelta(hours=1)),  # aligned on hours
    (timedelta(days=2), timedelta(0)),  # aligned on now
    (timedelta(hours=26, minutes=59, seconds=59), timedelta(hours=1, seconds=1)),
    (timedelta(minutes=3, seconds=30), timedelta(seconds=30)),  # minutes only
    (timedelta(seconds=50), timedelta(seconds=10)),  # inside one minute: no whole row
    (timedelta(days=6, hours=23, minutes=1), timedelta(days=1, minutes=59)),
]
FILTERS = [{}, {"environments": ("production",)}, {"models": None}]


@pytest.mark.parametrize("ors", [True, False])
@pytest.mark.parametrize("filters", range(len(FILTERS)))
@pytest.mark.parametrize("projects", [False, True])
def test_estimates_equal_polars_either_way(metrics_data, monkeypatch, ors, filters, projects):  # noqa: F811
    d = metrics_data
    now = d["now"]
    monkeypatch.setattr(type(store_for(d["engine"])), "ors_time_ranges", ors)
    df = d["df"].filter((pl.col("org_id") == d["acme"]) & pl.col("duplicate_of").is_null())
    calls = reference_llm_calls(d["df"])
    kw = dict(FILTERS[filters])
    if "models" in kw:
        kw["models"] = tuple(sorted(df["model"].drop_nulls().unique().to_list())[:2])
    scope_kw = {"project_ids": frozenset(d["projects"][:1])} if projects else {}
    scope = admin_scope(d["acme"], **scope_kw)
    if projects:
        df = df.filter(pl.col("project_id").is_in(d["projects"][:1]))
    if "environments" in kw:
        df = df.filter(pl.col("environment").is_in(kw["environments"]))
    if "models" in kw:
        df = df.filter(pl.col("model").is_in(kw["models"]))
    for a, b in RANGES:
        start, end = now - a, now - b
        first, last = _ceil_minute(start), end.replace(second=0, microsecond=0)
        rows = df.filter((pl.col("start_time") >= first) & (pl.col("start_time") < last))
        spec = FilterSpec(relative=None, start=start, end=end, **kw)
        got = spans_in_range(d["engine"], scope, spec, start, end)
        assert got == rows.height, (a, b)
        mine = rows.filter(pl.col("id").is_in(list(calls)))
        for group_by in (("model",), ("model", "environment")):
            n = known_groups(d["engine"], scope, Subject.LLM_CALLS, group_by, spec, start, end)
            assert n == mine.select(list(group_by)).n_unique() if mine.height else n == 0, (
                a,
                b,
                group_by,
            )
