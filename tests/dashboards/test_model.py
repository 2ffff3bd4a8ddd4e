"""A dashboard's JSON form: it round-trips, and a bad definition is refused with the path of
the field to fix, by the metrics engine's own checks."""

from __future__ import annotations

import json

import pytest

from observatory_core.dashboards.model import (
    NO_BUCKET,
    DashboardError,
    from_dict,
    from_json,
    to_dict,
    to_json,
)
from observatory_core.demo.starter_dashboards import STARTER_DASHBOARDS
from observatory_core.filters.spec import FilterSpec

FULL = {
    "version": 1,
    "name": "Checkout team",
    "description": "Spend and latency of the checkout flow",
    "filters": {"relative": "30d", "environments": ["production"], "min_duration_ms": "250"},
    "columns": 3,
    "charts": [
        {
            "title": "p95 by model",
            "kind": "line",
            "series": "duration_ms.p95",
            "bucket": "1day",
            "group_by": ["model", "tag:customer"],
            "top": 7,
            "width": 2,
            "filters": {"models": ["gpt-4o", "o'reilly-model"], "metadata": ['["region", "eu"]']},
        },
        {"title": "Requests", "kind": "number", "series": "request_count"},
    ],
}


@pytest.mark.parametrize("data", [FULL, *STARTER_DASHBOARDS], ids=lambda d: d["name"])
def test_export_and_import_round_trip(data):
    board = from_dict(data)
    assert from_json(to_json(board)) == board
    assert from_dict(json.loads(json.dumps(to_dict(board)))) == board
    assert to_dict(from_dict(to_dict(board))) == to_dict(board)


def test_what_a_definition_means():
    board = from_dict(FULL)
    assert board.filters == FilterSpec(
        relative="30d", environments=("production",), min_duration_ms=250.0
    )
    line, number = board.charts
    assert line.filters.relative is None and line.filters.models == ("gpt-4o", "o'reilly-model")
    assert number.series == "request_count.count" and number.bucket == NO_BUCKET
    query = line.query(board.filters)
    assert query.filters == board.filters.replace(
        models=("gpt-4o", "o'reilly-model"), metadata=(("region", "eu"),)
    )
    assert query.bucket == "1day" and query.group_by == ("model", "tag:customer")
    assert number.query(board.filters).bucket is None  # one total


def _chart(**changes) -> dict:
    chart = {"title": "c", "kind": "line", "series": "request_count.count", **changes}
    return {"name": "d", "charts": [{"title": "a", "series": "request_count"}, chart]}


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (_chart(series="latency.p95"), "charts[1].series: Unknown metric 'latency'"),
        (_chart(series="request_count.p95"), "charts[1].series: p95 does not fit"),
        (_chart(series=""), "charts[1].series: give one metric"),
        (_chart(kind="donut"), "charts[1].kind: unknown kind 'donut'; choose from line"),
        (_chart(kind={"a": 1}), "charts[1].kind: unknown kind {'a': 1}"),
        (_chart(bucket=["1day"]), "charts[1].bucket: unknown bucket ['1day']"),
        (_chart(bucket="2min"), "charts[1].bucket: unknown bucket '2min'"),
        (_chart(bucket="none"), "charts[1].bucket: a line chart needs a time bucket"),
        (_chart(group_by=["colour"]), "charts[1].group_by: Cannot group by 'colour'"),
        (_chart(group_by=["tag:"]), "charts[1].group_by:"),
        (_chart(group_by=["model", "model"]), "charts[1].group_by: Each group-by"),
        (_chart(kind="pie"), "charts[1].group_by: a pie needs a group-by"),
        (
            _chart(kind="pie", series="duration_ms.p95", group_by=["model"]),
            "charts[1].series: a pie's slices must add up",
        ),
        (_chart(kind="number", group_by=["model"]), "charts[1].group_by: a single number"),
        (_chart(top=0), "charts[1].top: must be a whole number from 1 to 10"),
        (_chart(width=True), "charts[1].width: must be a whole number"),
        (_chart(title=" "), "charts[1].title: is empty"),
        (_chart(title="a\x00b"), "charts[1].title: holds control characters"),
        (_chart(colour="red"), "charts[1].colour: unknown field"),
        (_chart(filters={"relative": "7d"}), "charts[1].filters.relative: a chart takes"),
        (_chart(filters={"colours": ["red"]}), "charts[1].filters: Filter 'colours'"),
        (_chart(filters=["models"]), "charts[1].filters: must be an object"),
        ({"name": "d", "filters": {"relative": "9x"}}, "filters: Filter 'relative'"),
        ({"name": "d", "columns": 9}, "columns: must be a whole number from 1 to 4"),
        ({"name": "d", "charts": {}}, "charts: must be a list"),
        ({"name": "d", "charts": [1]}, "charts[0]: must be an object"),
        ({"name": "d", "charts": [{}] * 25}, "charts: 25 charts"),
        ({"name": "d", "version": 2}, "version: this server reads version 1"),
        ({"charts": []}, "name: is empty"),
        ({"name": 3}, "name: must be text"),
        ({"name": "d", "owner": "x"}, "owner: unknown field"),
        ([], "dashboard: must be a JSON object"),
    ],
)
def test_a_bad_definition_names_the_field_to_fix(data, says):
    with pytest.raises(DashboardError) as caught:
        from_dict(data)
    assert str(caught.value).startswith(says), str(caught.value)


def test_an_import_that_is_not_json_says_so():
    with pytest.raises(DashboardError, match=r"^json: not valid JSON"):
        from_json("{name: 1")


@pytest.mark.parametrize(
    ("filters", "says"),
    [
        ({"models": [None]}, "filters.models: must be text, a number or a list of them; got None"),
        ({"": [True]}, "filters.: must be text"),
        ({"models": {"a": 1}}, "filters.models: must be text"),
    ],
)
def test_filter_values_of_the_wrong_type_are_refused(filters, says):
    with pytest.raises(DashboardError) as caught:
        from_dict({"name": "d", "filters": filters})
    assert str(caught.value).startswith(says), str(caught.value)


def test_a_metadata_pair_may_be_written_as_a_list():
    board = from_dict({"name": "d", "filters": {"metadata": [["region", "eu"]], "relative": "7d"}})
    assert board.filters.metadata == (("region", "eu"),)
