"""The role matrix on metrics: a restricted field's series (grouped, in the custom query's
having and sort), each filter on it in metrics queries, and the summary's KPIs (see
matrix.py for the matrix itself)."""

from __future__ import annotations

from observatory_core.filters.spec import FilterSpec
from observatory_core.metrics.engine import run_metrics
from observatory_core.metrics.query import Having, MetricQuery
from tests.accounts.matrix import (
    ALL,
    FILTER_VALUES,
    FILTERS_OF,
    METRIC_OF,
    PRESENT,
    ROWS,
    api,
    cases,
    core,
    count,
    expected_ids,
    may_see,
    scope_of,
    typed,
)


def path_metric(world, role, field):
    """The field's series (grouped, in having and sort of the custom query), each filter on it
    in metrics queries, and the summary's KPIs."""
    out = []
    series = METRIC_OF.get(field)
    if series:
        column = {"input_cost_usd": 1, "output_cost_usd": 2}.get(field)
        costs = [r[3] * (0.25, 0.75)[column - 1] if column else r[3] for r in ROWS]

        def summed(rows):
            return len(rows) == 1 and abs(rows[0][series] - sum(costs)) < 1e-9

        url = f"/metrics?series={series}&bucket=none&relative=all&group_by=model"
        out.append(api(world, role, "GET", url, lambda got: summed(got.json()["data"]["rows"])))
        body = {
            "series": ["request_count.count"],
            "filters": {"relative": None},
            "bucket": None,
            "group_by": ["model"],
            "having": [{"series": series, "op": ">=", "value": 0}],
            "sort": series,
        }
        out.append(
            api(
                world,
                role,
                "POST",
                "/metrics/query",
                lambda got: got.json()["data"]["rows"][0]["request_count.count"] == len(ROWS),
                json=body,
            )
        )
        query = MetricQuery(series=(series,), filters=ALL, bucket=None, group_by=("model",))
        out.append(
            core(
                lambda: run_metrics(world["engine"], scope_of(world, role), query),
                lambda result: summed(result.frame.to_dicts()),
            )
        )
        having = MetricQuery(
            series=("request_count.count",),
            filters=ALL,
            bucket="1hour",
            group_by=("model",),
            having=(Having(series, ">=", 0),),
        )
        out.append(
            core(
                lambda: run_metrics(world["engine"], scope_of(world, role), having),
                lambda result: result.frame["request_count.count"].sum() == len(ROWS),
            )
        )
    if field == "total_cost_usd":
        out.append(
            api(
                world,
                role,
                "GET",
                "/metrics/summary?relative=7d",
                lambda got: "cost" in {k["key"] for k in got.json()["data"]["kpis"]},
            )
        )
    for name in FILTERS_OF[field]:
        n = len(expected_ids(name))
        value = FILTER_VALUES[name]
        url = f"/metrics?series=request_count.count&bucket=none&relative=all&{name}={value}"
        out.append(
            api(world, role, "GET", url, lambda got, n=n: count(got.json()["data"]["rows"]) == n)
        )
        body = {
            "series": ["request_count.count"],
            "filters": {"relative": None, name: typed(name)},
            "bucket": None,
        }
        out.append(
            api(
                world,
                role,
                "POST",
                "/metrics/query",
                lambda got, n=n: count(got.json()["data"]["rows"]) == n,
                json=body,
            )
        )
        spec = FilterSpec(relative=None, **{name: typed(name)})
        query = MetricQuery(series=("request_count.count",), filters=spec, bucket=None)
        out.append(
            core(
                lambda query=query: run_metrics(world["engine"], scope_of(world, role), query),
                lambda result, n=n: count(result.frame.to_dicts()) == n,
            )
        )
    return out


WALKS = {"metric": path_metric}


@cases(*WALKS)
def test_a_role_gets_a_field_on_a_path_only_when_it_may_see_it(world, role, field, path):
    outcomes = WALKS[path](world, role, field)
    assert outcomes, "the path produced nothing to judge"
    if may_see(role, field, path):
        assert set(outcomes) == {PRESENT}, outcomes
    else:
        assert PRESENT not in outcomes, outcomes
