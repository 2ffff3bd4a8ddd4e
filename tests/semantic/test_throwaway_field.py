"""A field declared once, inside the test, works end to end on both databases: a filter through
the HTTP API and in the OpenAPI document, the link and JSON round trips, the SQL (against the
rows chosen in Python from the raw spans), a group-by of the metrics engine and an export
column. Nothing but the one declaration below is added for it."""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta

import polars as pl
import pytest
from starlette.applications import Starlette

from observatory_core.accounts.permissions import Role
from observatory_core.accounts.scope import Scope, scoped_spans
from observatory_core.api import context
from observatory_core.api.app import api_mount
from observatory_core.api.common import FILTER_PARAMETERS, cache
from observatory_core.api.ratelimit import RateLimiter
from observatory_core.base.errors import UserError
from observatory_core.base.settings import get_settings
from observatory_core.exports.jobs import create_export, get_export
from observatory_core.exports.worker import WorkerConfig, work_once
from observatory_core.filters.compile import filter_conditions
from observatory_core.filters.spec import FilterError, FilterSpec
from observatory_core.ingest.apikeys import create_key
from observatory_core.metrics.engine import run_metrics
from observatory_core.metrics.query import MetricQuery
from observatory_core.semantic import fields as semantic_fields
from observatory_core.semantic.field_declaration import Field, FilterKind, Widget
from observatory_core.storage.dialect import json_object_text
from observatory_core.storage.schema import spans
from tests.api.conftest import ApiClient
from tests.helpers import END, admin_scope, all_spans, make_org, span, write
from tests.reference import reference_ids

# The one declaration: a customer is the span metadata's "customer" key.
CUSTOMER = Field(
    "customer",
    "Customer",
    "text",
    column=lambda c: json_object_text(c.metadata, "customer"),
    filter=FilterKind.IN_LIST,
    key="customers",
    group="customer",
    description="Customers (the span metadata's 'customer' key)",
    widget=Widget.TEXT_LIST,
    widget_label="Customers",
    value=lambda row: (row["metadata"] or {}).get("customer"),
)
CUSTOMERS = ("acme-corp", "globex", "initech", None)  # None: spans without the key
ALL = FilterSpec(relative=None)


@pytest.fixture
def customer(monkeypatch):
    """The field registered for one test; monkeypatch takes it out again (and puts back the
    routes' documented parameters, which an app created meanwhile rebuilt)."""
    monkeypatch.setitem(FILTER_PARAMETERS, "parameters", FILTER_PARAMETERS["parameters"])
    monkeypatch.setitem(semantic_fields.FIELDS, "customer", CUSTOMER)
    return CUSTOMER


@pytest.fixture
def loaded(engine):
    """Spans of two orgs; in each, customers in turn (and some spans without one)."""
    org, (project,) = make_org(engine, "acme")
    other, (other_project,) = make_org(engine, "globex")
    rows = []
    for i in range(60):
        who = CUSTOMERS[i % len(CUSTOMERS)]
        metadata = {"region": "eu"} | ({"customer": who} if who else {})
        start = END - timedelta(minutes=5 * i + 1)
        rows.append(
            span(
                org,
                project,
                start,
                metadata=metadata,
                duration_ms=100.0 + i,
                total_cost_usd=0.001 * (i % 7),
                model="gpt-4o" if i % 2 else "claude",
            )
        )
    rows.append(
        span(other, other_project, END - timedelta(minutes=3), metadata={"customer": "globex"})
    )
    write(engine, rows)
    return {"engine": engine, "org": org}


def _sql_ids(engine, scope: Scope, spec: FilterSpec) -> set[int]:
    query = scoped_spans(scope, spans.c.id).where(
        *filter_conditions(spec, END, engine.dialect.name)
    )
    with engine.connect() as conn:
        return set(conn.execute(query).scalars())


def test_link_and_json_round_trips(customer):
    spec = FilterSpec(relative=None, customers=("acme-corp", "globex"), models=("gpt-4o",))
    assert spec.customers == ("acme-corp", "globex")
    params = spec.to_query_params()
    assert params["customers"] == ["acme-corp", "globex"]
    assert FilterSpec.from_query_params(params) == spec
    stored = spec.to_json()
    assert json.loads(stored)["customers"] == ["acme-corp", "globex"]
    assert FilterSpec.from_json(stored) == spec
    assert spec.replace(customers=()) == FilterSpec(relative=None, models=("gpt-4o",))
    assert spec.fields_read()["customers"] == ("customer",)
    assert hash(FilterSpec.from_json(stored)) == hash(spec)


@pytest.mark.parametrize(
    "make, fix",
    [
        (lambda: FilterSpec(customers=("",)), "non-empty text"),
        (lambda: FilterSpec(customers=("a\x00b",)), "NUL"),
        (lambda: FilterSpec(customers=tuple(f"c{i}" for i in range(201))), "at most 200"),
        (lambda: FilterSpec(customers="acme-corp"), "expected a list"),
        (lambda: FilterSpec.from_json('{"customers": "acme-corp"}'), "expected a list"),
    ],
)
def test_bad_values_get_a_message_naming_the_filter(customer, make, fix):
    with pytest.raises(FilterError, match=f"Filter 'customers'.*{fix}"):
        make()


def test_without_the_declaration_the_filter_is_unknown():
    with pytest.raises(FilterError, match="Filter 'customers': unknown field"):
        FilterSpec(customers=("acme-corp",))


@pytest.mark.parametrize(
    "filters",
    [
        {"relative": None, "customers": ("acme-corp",)},
        {"relative": None, "customers": ("globex", "initech"), "models": ("gpt-4o",)},
        {"relative": "1h", "customers": ("initech",)},
        {"relative": None, "customers": ("nobody",)},
    ],
    ids=["one", "two-and-model", "window", "none"],
)
def test_sql_selects_the_rows_the_raw_spans_say(customer, loaded, filters):
    engine, org = loaded["engine"], loaded["org"]
    spec = FilterSpec(**filters)
    want = reference_ids(all_spans(engine), spec, END, org)
    assert _sql_ids(engine, admin_scope(org), spec) == want
    if spec.customers != ("nobody",):
        assert want  # the case tests something


def test_group_by_through_the_metrics_engine(customer, loaded):
    engine, org = loaded["engine"], loaded["org"]
    query = MetricQuery(
        series=("request_count.count", "duration_ms.sum"),
        filters=ALL,
        bucket=None,
        group_by=("customer",),
    )
    result = run_metrics(engine, admin_scope(org), query, now=END)
    assert result.source == "raw"
    got = {
        r["customer"]: (r["request_count.count"], r["duration_ms.sum"])
        for r in result.frame.to_dicts()
    }
    raw = all_spans(engine).filter(pl.col("org_id") == org).to_dicts()
    want: dict = {}
    for r in raw:
        n, total = want.get(customer.row_value(r), (0, 0.0))
        want[customer.row_value(r)] = (n + 1, total + r["duration_ms"])
    assert got.keys() == want.keys() == set(CUSTOMERS)
    for key, (n, total) in want.items():
        assert got[key][0] == n and got[key][1] == pytest.approx(total)


def test_group_by_is_refused_without_the_declaration():
    with pytest.raises(UserError, match="Cannot group by 'customer'"):
        MetricQuery(series=("request_count.count",), group_by=("customer",))


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_export_column(customer, loaded, tmp_path, fmt):
    engine, org = loaded["engine"], loaded["org"]
    scope = Scope(org_id=org, role=Role.DEVELOPER, username="dana")
    spec = FilterSpec(relative=None, customers=("acme-corp", "initech"))
    job = create_export(engine, scope, spec, fmt=fmt, fields=["span_id", "customer", "model"])
    config = WorkerConfig(export_dir=tmp_path, page_size=7, copy_page_size=7)
    assert work_once(engine, config) == "completed"
    job = get_export(engine, scope, job["id"])
    raw = (tmp_path / job["file_name"]).read_bytes()
    if fmt == "csv":
        rows = list(csv.DictReader(io.StringIO(raw.decode())))
    else:
        import pyarrow.parquet as pq

        rows = pq.read_table(io.BytesIO(raw)).to_pylist()
    want = {
        r["span_id"]: customer.row_value(r)
        for r in all_spans(engine).to_dicts()
        if r["org_id"] == org and customer.row_value(r) in spec.customers
    }
    assert len(rows) == job["rows_written"] == len(want) > 0
    assert {r["span_id"]: r["customer"] for r in rows} == want


@pytest.fixture
def client(customer, loaded, db_url, monkeypatch, tmp_path):
    """The API app, created after the field was registered, and a developer's read key."""
    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.setenv("OBSERVATORY_EXPORT_DIR", str(tmp_path / "exports"))
    get_settings.cache_clear()
    monkeypatch.setattr(context, "limiter", RateLimiter())
    cache._items.clear()
    key = create_key(
        loaded["engine"], admin_scope(loaded["org"]), "dev", scopes=("read",), role="developer"
    )
    client = ApiClient(Starlette(routes=[api_mount()]))
    client.headers["authorization"] = f"Bearer {key}"
    yield client
    get_settings.cache_clear()


def test_filter_through_the_api(client, loaded):
    engine, org = loaded["engine"], loaded["org"]
    answer = client.get(
        "/traces",
        params={
            "relative": "all",
            "customers": ["globex"],
            "limit": 1000,
            "fields": ["id", "customer"],
        },
    )
    assert answer.status_code == 200, answer.text
    rows = answer.json()["data"]
    want = reference_ids(
        all_spans(engine), FilterSpec(relative=None, customers=("globex",)), END, org
    )
    assert {r["id"] for r in rows} == want and want
    assert {r["customer"] for r in rows} == {"globex"}

    bad = client.get("/traces", params={"customers": ""})
    assert bad.status_code == 400
    assert "Filter 'customers'" in bad.json()["error"]["message"]

    document = client.get("/openapi.json").json()
    parameters = {p["name"]: p for p in document["paths"]["/traces"]["get"]["parameters"]}
    assert parameters["customers"]["description"] == CUSTOMER.description
