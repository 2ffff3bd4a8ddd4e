"""The filter widgets' value lists against polars over the raw rows, on SQLite, PostgreSQL and
the span store: every list, a project-limited scope, other orgs' values, a racing writer's
later copy (only its values listed), the lists' bound (the last `VALUE_DAYS` days), and a column
without a list refused. Each call reads at the fixture's `NOW`, as the reference does."""

from __future__ import annotations

from datetime import timedelta

import polars as pl
import pytest

from observatory_core.base.errors import UserError
from observatory_core.traces.values import CHOICE_COLUMNS, VALUE_DAYS, distinct_values
from tests.chdb_store import write_later_copy
from tests.helpers import admin_scope, span
from tests.traces.conftest import NOW, globex_project

LISTS = (*CHOICE_COLUMNS, "provider", "model", "environment")


def _reference(df: pl.DataFrame, org: int, column: str, projects=None) -> list:
    since = NOW - timedelta(days=VALUE_DAYS)
    rows = df.filter((pl.col("org_id") == org) & (pl.col("start_time") >= since))
    if projects is not None:
        rows = rows.filter(pl.col("project_id").is_in(list(projects)))
    return sorted(rows[column].drop_nulls().unique().to_list())


@pytest.mark.parametrize("column", sorted(set(LISTS)))
def test_each_list_is_the_orgs_values(explorer, column):
    for org in (explorer["acme"], explorer["globex"]):
        got = distinct_values(explorer["engine"], admin_scope(org), column, now=NOW)
        assert len(got) == len(set(got)) and sorted(got) == _reference(explorer["df"], org, column)


def test_a_project_limited_scope_lists_its_projects_values_only(explorer):
    first = explorer["projects"][0]
    scope = admin_scope(explorer["acme"], project_ids=frozenset({first}))
    for column in ("model", "environment", "status"):
        got = distinct_values(explorer["engine"], scope, column, now=NOW)
        assert sorted(got) == _reference(explorer["df"], explorer["acme"], column, (first,))


def test_another_orgs_values_never_appear(explorer):
    call = span(explorer["globex"], 0, NOW - timedelta(hours=1), model="globex-only-model")
    call["project_id"] = explorer["df"].filter(pl.col("org_id") == explorer["globex"])[
        "project_id"
    ][0]
    explorer["write"]([call])
    try:
        assert "globex-only-model" in distinct_values(
            explorer["engine"], admin_scope(explorer["globex"]), "model", now=NOW
        )
        assert "globex-only-model" not in distinct_values(
            explorer["engine"], admin_scope(explorer["acme"]), "model", now=NOW
        )
    finally:
        explorer["remove"]([call["trace_id"]])


def test_a_later_copy_of_a_span_is_the_one_listed(explorer):
    """A racing writer's later copy changed the span's model and environment: only the newest
    copy's values are offered (the older copy's would filter to nothing)."""
    if explorer["store"] != "chdb":
        pytest.skip("only the span store keeps copies of a span")
    globex, project = globex_project(explorer)
    first = span(globex, project, NOW - timedelta(hours=1), model="older-copy-model")
    explorer["write"]([first])
    try:
        later = {**first, "model": "newer-copy-model", "environment": "newer-copy-env"}
        write_later_copy(explorer["span_store"], [later])
        scope = admin_scope(globex)
        models = distinct_values(explorer["engine"], scope, "model", now=NOW)
        assert "newer-copy-model" in models and "older-copy-model" not in models
        assert "newer-copy-env" in distinct_values(
            explorer["engine"], scope, "environment", now=NOW
        )
        assert sorted(m for m in models if m != "newer-copy-model") == _reference(
            explorer["df"], globex, "model"
        )
    finally:
        explorer["remove"]([first["trace_id"]])


def test_the_lists_hold_the_last_value_days_days_only(explorer):
    """A model last used just before the lists' bound is not offered, one used just after it
    is, and the list is polars' over the spans since the bound (every store alike)."""
    globex, project = globex_project(explorer)
    bound = NOW - timedelta(days=VALUE_DAYS)
    stale = span(globex, project, bound - timedelta(hours=1), model="stale-model")
    recent = span(globex, project, bound + timedelta(hours=1), model="recent-model")
    explorer["write"]([stale, recent])
    try:
        got = distinct_values(explorer["engine"], admin_scope(globex), "model", now=NOW)
        assert "recent-model" in got and "stale-model" not in got
        df = pl.concat(
            [
                explorer["df"].select("org_id", "start_time", "model"),
                pl.DataFrame([stale, recent]).select("org_id", "start_time", "model"),
            ],
            how="vertical_relaxed",
        )
        assert got == _reference(df, globex, "model")
        # all time (`days=None`), the stale model too
        every = distinct_values(
            explorer["engine"], admin_scope(globex), "model", now=NOW, days=None
        )
        assert "stale-model" in every and "recent-model" in every
    finally:
        explorer["remove"]([stale["trace_id"], recent["trace_id"]])


def test_a_column_without_a_list_is_refused_in_one_sentence(explorer):
    with pytest.raises(UserError, match="No value list for 'input_text'; choose from"):
        distinct_values(explorer["engine"], admin_scope(explorer["acme"]), "input_text")
