"""The role matrix on the traces list and a trace's detail: a column asked for by name or
shown by default, each sort and filter that reads a restricted field, and the trace tree (see
matrix.py for the matrix itself)."""

from __future__ import annotations

import pytest

from observatory_core.accounts.permissions import Role
from observatory_core.filters.spec import FilterSpec
from observatory_core.traces.detail import get_trace
from observatory_core.traces.fields import DEFAULT_FIELDS
from observatory_core.traces.query import SORTS, list_spans
from tests.accounts.matrix import (
    ALL,
    FILTER_VALUES,
    FILTERS_OF,
    PRESENT,
    api,
    cases,
    core,
    expected_ids,
    in_rows,
    may_see,
    scope_of,
    unless_not_offered,
)


def path_list(world, role, field):
    """A column asked for by name (API and core), and the default columns."""
    named = f"/traces?relative=all&fields=span_id&fields={field}"
    out = [
        api(world, role, "GET", named, in_rows(field)),
        core(
            lambda: list_spans(
                world["engine"], scope_of(world, role), ALL, fields=["span_id", field]
            ),
            lambda page: field in page.fields and all(field in r for r in page.rows),
        ),
    ]
    default = api(world, role, "GET", "/traces?relative=all&mode=traces", in_rows(field))
    return out + unless_not_offered(default, field, DEFAULT_FIELDS)


def path_sort(world, role, field):
    def ordered(got):
        values = [r[field] for r in got.json()["data"]]
        return len(values) > 1 and values == sorted(values, reverse=True)

    out = []
    for mode in ("spans", "traces"):
        out.append(
            api(world, role, "GET", f"/traces?relative=all&mode={mode}&sort={field}", ordered)
        )
        out.append(
            core(
                lambda mode=mode: list_spans(
                    world["engine"], scope_of(world, role), ALL, mode=mode, sort=field
                ),
                lambda page: (
                    [r[field] for r in page.rows]
                    == sorted((r[field] for r in page.rows), reverse=True)
                ),
            )
        )
    return out


def path_filter(world, role, field):
    """Each filter that reads the field, on the list: applied exactly, or refused."""
    out = []
    for name in FILTERS_OF[field]:
        expected = expected_ids(name)
        value = FILTER_VALUES[name]
        out.append(
            api(
                world,
                role,
                "GET",
                f"/traces?relative=all&limit=100&{name}={value}",
                lambda got, e=expected: {r["span_id"] for r in got.json()["data"]} == e,
            )
        )
        spec = FilterSpec.from_query_params({"relative": "all", name: value})
        out.append(
            core(
                lambda spec=spec: list_spans(
                    world["engine"], scope_of(world, role), spec, limit=100
                ),
                lambda page, e=expected: {r["span_id"] for r in page.rows} == e,
            )
        )
    return out


def path_detail(world, role, field):
    def every_span(spans) -> bool:
        return all(field in s for s in spans)

    out = [
        api(
            world,
            role,
            "GET",
            f"/traces/{world['trace']}",
            lambda got: (
                every_span(got.json()["data"]["spans"])
                and (field != "total_cost_usd" or got.json()["data"]["total_cost_usd"] is not None)
            ),
        ),
        core(
            lambda: get_trace(world["engine"], scope_of(world, role), world["trace"]),
            lambda detail: (
                every_span(detail.spans)
                and (field != "total_cost_usd" or detail.total_cost_usd is not None)
            ),
        ),
    ]
    return out


WALKS = {"list": path_list, "sort": path_sort, "filter": path_filter, "detail": path_detail}


@cases(*WALKS)
def test_a_role_gets_a_field_on_a_path_only_when_it_may_see_it(world, role, field, path):
    outcomes = WALKS[path](world, role, field)
    assert outcomes, "the path produced nothing to judge"
    if may_see(role, field, path):
        assert set(outcomes) == {PRESENT}, outcomes
    else:
        assert PRESENT not in outcomes, outcomes


@pytest.mark.parametrize("mode", ["spans", "traces"])
def test_a_sort_key_left_out_of_the_fields_still_pages(world, mode):
    """The cursor is made from the sort key: asking for other columns only was a KeyError (500)."""
    headers = {"authorization": f"Bearer {world['keys'][Role.DEVELOPER]}"}
    for sort in SORTS:
        url = f"/traces?relative=all&limit=2&mode={mode}&sort={sort}&fields=span_id"
        first = world["client"].get(url, headers=headers)
        assert first.status_code == 200, (sort, first.text[:300])
        cursor = first.json()["next_cursor"]
        second = world["client"].get(f"{url}&cursor={cursor}", headers=headers)
        assert second.status_code == 200, (sort, second.text[:300])
        seen = [r["span_id"] for r in first.json()["data"] + second.json()["data"]]
        assert len(seen) == len(set(seen)) == 4
