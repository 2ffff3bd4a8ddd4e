"""The tables follow the declarations: a metric or a filter declared in semantic/ reaches the
ClickHouse columns, indexes and views without a list to copy (docs/scale.md)."""

from __future__ import annotations

import dataclasses

from observatory_core.semantic import fields, metrics
from observatory_core.semantic.field_declaration import FilterKind
from observatory_core.semantic.metrics import MEASURE_PARTS, Partials
from observatory_core.storage.clickhouse import ddl, layout
from observatory_core.storage.schema import spans


def test_a_metric_with_partials_of_its_own_gets_rollup_columns_and_view_aggregates(monkeypatch):
    extra = dataclasses.replace(
        metrics.METRICS["ttft_ms"],
        name="ttft_twice",
        expression=lambda c: c.ttft_ms * 2,
        rollup=Partials("ttft_twice", layout=99),
    )
    monkeypatch.setitem(metrics.METRICS, "ttft_twice", extra)
    columns = {p.column.name: p for p in layout.rollup_partials()}
    assert {f"ttft_twice_{part}" for part in MEASURE_PARTS} <= columns.keys()
    assert columns["ttft_twice_sum"].select == ("sum(toFloat64(ifNull(`spans`.`ttft_ms` * 2, 0)))")
    text = ddl.ddl_text("observatory")
    assert "`ttft_twice_max` SimpleAggregateFunction(max, Nullable(Float64))" in text
    assert "max(rows.ttft_twice_max) AS ttft_twice_max" in text  # the hour from the minute


def test_a_new_range_filter_gets_a_min_max_index(monkeypatch):
    ranged = dataclasses.replace(fields.FIELDS["ttft_ms"], filter=FilterKind.RANGE)
    monkeypatch.setitem(fields.FIELDS, "ttft_ms", ranged)
    indexes = {i.name: i for i in layout.skip_indexes()}
    assert indexes["idx_ttft_ms"].ddl() == "INDEX idx_ttft_ms `ttft_ms` TYPE minmax GRANULARITY 4"


def test_every_declared_search_column_gets_an_ngram_index():
    search = [f for f in fields.FIELDS.values() if f.filter is FilterKind.SEARCH]
    names = {i.name for i in layout.skip_indexes()}
    assert search and all(f"idx_{c}_ngrams" in names for f in search for c in f.filter_reads())


def test_true_division_in_a_declaration_stays_double_precision():
    sql = layout.sql(metrics.METRICS["tokens_per_second"].expression(spans.c))
    assert "AS Float64)" in sql and "FLOAT" not in sql
