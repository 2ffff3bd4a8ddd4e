"""The field table is complete: every filter key, API filter parameter, sidebar widget, group-by
choice, rollup column and list column comes from a declaration in `semantic.fields`, and the
stored JSON of filters written before the table existed still loads."""

from __future__ import annotations

import json

import pytest
from starlette.testclient import TestClient

from observatory_core.api.app import create_app
from observatory_core.api.common import FILTER_PARAMETERS
from observatory_core.api.schemas import filter_params_model
from observatory_core.api.traces import OWN
from observatory_core.filters.spec import FilterSpec, filter_names
from observatory_core.ingest.spanrows import SPAN_COLUMNS
from observatory_core.metrics import catalog, rollup_path
from observatory_core.semantic import field_lookups
from observatory_core.semantic.field_declaration import Field, FilterKind, Widget
from observatory_core.semantic.field_lookups import (
    DIMENSIONS,
    FIELD_NEEDS,
    ROLLUP_GROUPS,
    TIME_KEYS,
    filter_keys,
)
from observatory_core.semantic.fields import FIELDS
from observatory_core.storage.schema import ROLLUP_DIMENSIONS
from observatory_core.traces.fields import ALL_FIELDS
from observatory_core.ui import filters as sidebar

# What `FilterSpec.to_json` wrote before the table (exports and alert rules store it).
STORED_BEFORE = (
    '{"end": null, "environments": [], "max_cost_usd": 0.5, "max_duration_ms": null, '
    '"max_total_tokens": null, "metadata": [["region", "eu"]], "min_cost_usd": null, '
    '"min_duration_ms": 100.0, "min_total_tokens": null, "models": ["gpt-4o"], '
    '"operations": ["chat"], "project_ids": [3], "providers": [], "relative": "7d", '
    '"search": "refund", "session_ids": [], "span_ids": [], "start": null, '
    '"statuses": ["error"], "tags_all": [], "tags_any": ["beta"], "trace_ids": [], '
    '"user_ids": ["u1"]}'
)
THROWAWAY = Field(
    "throwaway",
    "Throwaway",
    "text",
    column=lambda c: c.model,
    filter=FilterKind.IN_LIST,
    key="throwaways",
    group="throwaway",
    widget=Widget.TEXT_LIST,
)


@pytest.fixture(params=["as declared", "with a field registered"])
def registry(request, monkeypatch):
    if request.param != "as declared":
        # the routes' documented parameters are put back too (an app made later rebuilds them)
        monkeypatch.setitem(FILTER_PARAMETERS, "parameters", FILTER_PARAMETERS["parameters"])
        monkeypatch.setitem(FIELDS, THROWAWAY.name, THROWAWAY)
    return request.param


def _declared_keys() -> set[str]:
    return {key for f in FIELDS.values() for key in f.filter_keys()}


def test_filter_spec_keys_are_the_declared_ones(registry):
    assert set(filter_names()) == set(TIME_KEYS) | _declared_keys()
    assert set(json.loads(FilterSpec().to_json())) == set(filter_names())
    for key in _declared_keys():
        assert getattr(FilterSpec(), key) in ((), None)


def test_api_filter_parameters_are_the_declared_ones(registry):
    assert set(filter_params_model().model_fields) == set(filter_names())
    document = TestClient(create_app()).get("/openapi.json").json()
    for path in ("/traces", "/metrics/summary"):
        names = {p["name"] for p in document["paths"][path]["get"]["parameters"]}
        own = OWN | {"series", "bucket", "group_by", "period"}
        assert names - own == set(filter_names()), path


def test_sidebar_widgets_are_the_declared_ones(registry):
    drawn = set()
    for name, field, _ in sidebar._widgets():
        keys = field.filter_keys()
        assert name in keys or f"min_{name}" in keys
        drawn.update(keys if field.filter is FilterKind.RANGE else (name,))
    with_widget = {
        k for f in FIELDS.values() if f.widget is not Widget.NONE for k in f.filter_keys()
    }
    assert drawn == with_widget
    assert with_widget <= set(filter_names())


def test_group_by_choices_are_the_declared_ones(registry):
    declared = [f.group for f in FIELDS.values() if f.group and not f.slot]  # slots: internal
    assert list(DIMENSIONS) == list(catalog.DIMENSIONS) == declared
    assert dict(catalog.DIMENSION_FIELDS) == {f.group: f.name for f in FIELDS.values() if f.group}
    assert set(ROLLUP_GROUPS) == {f.group for f in FIELDS.values() if f.rollup}
    assert set(rollup_path.ROLLUP_FILTERS) == {
        k for f in FIELDS.values() if f.rollup for k in f.filter_keys()
    }
    if registry != "as declared":
        assert "throwaway" in DIMENSIONS and "throwaway" not in ROLLUP_GROUPS


def test_rollups_carry_exactly_the_rollup_fields():
    assert {f.name for f in FIELDS.values() if f.rollup} == set(ROLLUP_DIMENSIONS)
    # the declared dimensions' slots group but do not filter (issue 19)
    slots = {f.name for f in FIELDS.values() if f.slot}
    assert set(rollup_path._FILTER_COLUMN.values()) == set(ROLLUP_DIMENSIONS) - slots


def test_every_stored_column_is_declared_and_listed(registry):
    stored = {"id", *SPAN_COLUMNS} - {"org_id"}
    # every stored column has a field of its name: the column itself, or (llm_call) an
    # expression of it; every plain field is a stored column
    assert stored <= set(FIELDS)
    assert {f.name for f in FIELDS.values() if f.plain} <= stored
    assert {f.name for f in FIELDS.values() if f.name in stored and not f.plain} == {"llm_call"}
    assert set(ALL_FIELDS) == {f.name for f in FIELDS.values() if f.listed}


def test_each_filter_kind_is_declared_once():
    kinds = [f.filter for f in FIELDS.values()]
    for kind in (FilterKind.TAGS, FilterKind.METADATA, FilterKind.SEARCH):
        assert kinds.count(kind) == 1  # compile.py and the reference read these by kind
    assert len(filter_keys()) == len(_declared_keys())  # no key declared twice


def test_permissions_are_read_from_the_declarations(monkeypatch):
    assert dict(FIELD_NEEDS) == {
        "total_cost_usd": "costs:read",
        "input_cost_usd": "costs:read",
        "output_cost_usd": "costs:read",
        "cost_source": "costs:read",
        "input_text": "traces:read",
        "output_text": "traces:read",
        "text_truncated": "traces:read",
    }
    from observatory_core.accounts.permissions import Permission, Role

    monkeypatch.setitem(
        FIELDS, "secret", Field("secret", "Secret", "text", needs=Permission.COSTS_READ)
    )
    assert "secret" in field_lookups.fields_hidden_from(Role.VIEWER)
    assert "secret" not in field_lookups.fields_hidden_from(Role.BILLING)


def test_filters_stored_before_the_table_still_load():
    spec = FilterSpec.from_json(STORED_BEFORE)
    assert spec == FilterSpec(
        relative="7d",
        models=("gpt-4o",),
        operations=("chat",),
        statuses=("error",),
        project_ids=(3,),
        user_ids=("u1",),
        tags_any=("beta",),
        metadata=(("region", "eu"),),
        min_duration_ms=100.0,
        max_cost_usd=0.5,
        search="refund",
    )
    # written back, it gains the filters declared since (llm_call: issue 24), unset
    assert json.loads(spec.to_json()) == {**json.loads(STORED_BEFORE), "llm_call": []}
