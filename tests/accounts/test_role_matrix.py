"""Every role x every restricted field x every path: refused or absent, never present, never a 500.

The restricted fields are `semantic.fields.FIELD_NEEDS` (each field's `needs`) (costs need costs:read, prompt and answer
text need traces:read). Each path is walked through the HTTP API (real keys, real routes) and
through the core functions the pages call. A role that may see a field (and use the path at
all) must get it: the same walk is the positive control that shows each path can expose it.
One small hand-made dataset per database, shared by the whole module.
"""

from __future__ import annotations

import csv
import io
import uuid
from datetime import timedelta

import pytest
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.testclient import TestClient

from observatory_core.accounts.permissions import ROLE_PERMISSIONS, Permission, Role
from observatory_core.accounts.scope import Scope
from observatory_core.api import context
from observatory_core.api.app import create_app
from observatory_core.api.common import cache
from observatory_core.api.ratelimit import RateLimiter
from observatory_core.base.errors import PermissionDenied
from observatory_core.base.settings import get_settings
from observatory_core.exports.jobs import EXPORT_DEFAULT_FIELDS, create_export, download_target
from observatory_core.exports.worker import WorkerConfig, work_once
from observatory_core.filters.spec import FILTER_READS, FilterSpec
from observatory_core.ingest.apikeys import create_key
from observatory_core.metrics.catalog import DIMENSION_FIELDS, METRICS
from observatory_core.metrics.engine import run_metrics
from observatory_core.metrics.query import Having, MetricQuery
from observatory_core.reports.live import SPAN_FIELDS as LIVE_FIELDS
from observatory_core.reports.live import live_feed
from observatory_core.semantic.fields import FIELD_NEEDS
from observatory_core.storage.engine import get_engine
from observatory_core.storage.migrate import upgrade
from observatory_core.traces.detail import get_trace
from observatory_core.traces.fields import DEFAULT_FIELDS
from observatory_core.traces.query import SORTS, list_spans
from tests.conftest import pg_admin
from tests.helpers import END, make_org, span, write

ROLES = tuple(Role)
FIELDS = tuple(FIELD_NEEDS)
ALL = FilterSpec(relative=None)
# A filter value per filter that reads a restricted field, and the spans it selects.
FILTER_VALUES = {"min_cost_usd": "0.05", "max_cost_usd": "0.015", "search": "refactor"}
# field -> the metric series computed from it
METRIC_OF = {f: f"{m.name}.sum" for m in METRICS.values() for f in m.reads}
FILTERS_OF = {f: [n for n, reads in FILTER_READS.items() if f in reads] for f in FIELDS}

# (start offset in minutes before END, trace, parent, total cost, input text, output text)
ROWS = [
    (180, "a", None, 0.000, "plan the refactor of billing", "three steps"),
    (179, "a", 0, 0.080, "refactor this module", "done"),
    (178, "a", 0, 0.020, "hello", "a world of refactoring"),
    (120, "b", None, 0.060, "summarize the report", "short summary"),
    (60, "c", None, 0.010, "translate to French", "bonjour"),
    (30, "d", None, 0.030, "classify the ticket", "urgent"),
]


def _rows(org: int, project: int) -> tuple[list[dict], str]:
    out = []
    traces = {t: uuid.uuid4().hex for t in "abcd"}
    for i, (minutes, trace, parent, cost, text_in, text_out) in enumerate(ROWS):
        out.append(
            span(
                org,
                project,
                END - timedelta(minutes=minutes),
                trace_id=traces[trace],
                span_id=f"{i + 1:016x}",
                parent_span_id=None if parent is None else f"{parent + 1:016x}",
                model="gpt-4o",
                provider="openai",
                duration_ms=100.0 + i,
                input_tokens=10 * (i + 1),
                output_tokens=5,
                total_tokens=10 * (i + 1) + 5,
                input_cost_usd=cost * 0.25,
                output_cost_usd=cost * 0.75,
                total_cost_usd=cost,
                input_text=text_in,
                output_text=text_out,
            )
        )
    return out, traces["a"]


def _expected_ids(spec_name: str) -> set[str]:
    """Independent of the query code: which span ids each filter value selects."""
    keep = {
        "min_cost_usd": lambda r: r[3] >= 0.05,
        "max_cost_usd": lambda r: r[3] <= 0.015,
        "search": lambda r: "refactor" in (r[4] + " " + r[5]).lower(),
    }[spec_name]
    return {f"{i + 1:016x}" for i, r in enumerate(ROWS) if keep(r)}


class Client(TestClient):
    def request(self, method, url, *args, **kwargs):
        return super().request(method, "/api/v1" + url, *args, **kwargs)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def world(request, tmp_path_factory):
    """One database of each kind (its own, so other modules' fixtures never empty it), six
    spans, a read key per role, and finished developer exports: one per restricted field and
    one per restricted filter."""
    tmp = tmp_path_factory.mktemp("matrix")
    if request.param == "sqlite":
        url = f"sqlite:///{tmp / 'observatory.db'}"
    else:
        name = f"obs_matrix_{uuid.uuid4().hex[:10]}"
        pg_admin(f'CREATE DATABASE "{name}"')
        url = request.getfixturevalue("pg_url").rsplit("/", 1)[0] + f"/{name}"
    engine = get_engine(url)
    upgrade(engine)
    patch = pytest.MonkeyPatch()
    patch.setenv("DATABASE_URL", url)
    patch.setenv("OBSERVATORY_EXPORT_DIR", str(tmp / "exports"))
    patch.setattr(context, "limiter", RateLimiter({r: 1_000_000 for r in Role}))
    get_settings.cache_clear()
    cache._items.clear()
    org, (project,) = make_org(engine, "acme")
    rows, trace = _rows(org, project)
    write(engine, rows)
    admin = Scope(org_id=org, role=Role.ADMIN, username="root")
    keys = {
        role: create_key(engine, admin, f"{role} key", scopes=("read",), role=role)
        for role in ROLES
    }
    dev = Scope(org_id=org, role=Role.DEVELOPER, username="dev")
    jobs = {
        ("field", f): create_export(engine, dev, ALL, fields=["span_id", f], fmt="csv")["id"]
        for f in FIELDS
    }
    for name, value in FILTER_VALUES.items():
        spec = FilterSpec.from_query_params({"relative": "all", name: value})
        jobs[("filter", name)] = create_export(engine, dev, spec, fields=["span_id"])["id"]
    config = WorkerConfig(export_dir=tmp / "exports")
    while work_once(engine, config) is not None:
        pass
    yield {
        "engine": engine,
        "client": Client(Starlette(routes=[Mount("/api/v1", app=create_app())])),
        "keys": keys,
        "org": org,
        "trace": trace,
        "jobs": jobs,
        "export_dir": tmp / "exports",
    }
    patch.undo()
    get_settings.cache_clear()
    cache._items.clear()
    engine.dispose()
    if request.param == "postgresql":
        pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# ---- outcomes ------------------------------------------------------------------------------
REFUSED, ABSENT, PRESENT = "refused", "absent", "present"


def _api(world, role: Role, method: str, url: str, present, **kwargs) -> str:
    """Call the API; a 403 must be the JSON envelope, anything else 2xx; never a 500."""
    got = world["client"].request(
        method, url, headers={"authorization": f"Bearer {world['keys'][role]}"}, **kwargs
    )
    assert got.status_code < 500, (url, got.status_code, got.text[:300])
    if got.status_code == 403:
        error = got.json()["error"]
        assert error["code"] == "forbidden" and error["message"], got.text
        return REFUSED
    assert got.status_code in (200, 201), (url, got.status_code, got.text[:300])
    return PRESENT if present(got) else ABSENT


def _core(call, present) -> str:
    try:
        result = call()
    except PermissionDenied as exc:
        assert str(exc)
        return REFUSED
    return PRESENT if present(result) else ABSENT


def _in_rows(field: str):
    return lambda got: any(field in r for r in got.json()["data"])


def _scope(world, role: Role) -> Scope:
    return Scope(org_id=world["org"], role=role, username=f"{role.value}-user")


# ---- the paths -----------------------------------------------------------------------------
def path_list(world, role, field):
    """A column asked for by name (API and core), and the default columns."""
    named = f"/traces?relative=all&fields=span_id&fields={field}"
    out = [
        _api(world, role, "GET", named, _in_rows(field)),
        _core(
            lambda: list_spans(
                world["engine"], _scope(world, role), ALL, fields=["span_id", field]
            ),
            lambda page: field in page.fields and all(field in r for r in page.rows),
        ),
    ]
    default = _api(world, role, "GET", "/traces?relative=all&mode=traces", _in_rows(field))
    return out + _unless_not_offered(default, field, DEFAULT_FIELDS)


def _unless_not_offered(outcome: str, field: str, offered) -> list[str]:
    """A default set (columns, export fields, the live feed's) holds only some fields: a
    visible field outside it is absent for everyone, which says nothing about roles."""
    return [] if outcome == ABSENT and field not in offered else [outcome]


def path_sort(world, role, field):
    def ordered(got):
        values = [r[field] for r in got.json()["data"]]
        return len(values) > 1 and values == sorted(values, reverse=True)

    out = []
    for mode in ("spans", "traces"):
        out.append(
            _api(world, role, "GET", f"/traces?relative=all&mode={mode}&sort={field}", ordered)
        )
        out.append(
            _core(
                lambda mode=mode: list_spans(
                    world["engine"], _scope(world, role), ALL, mode=mode, sort=field
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
        expected = _expected_ids(name)
        value = FILTER_VALUES[name]
        out.append(
            _api(
                world,
                role,
                "GET",
                f"/traces?relative=all&limit=100&{name}={value}",
                lambda got, e=expected: {r["span_id"] for r in got.json()["data"]} == e,
            )
        )
        spec = FilterSpec.from_query_params({"relative": "all", name: value})
        out.append(
            _core(
                lambda spec=spec: list_spans(world["engine"], _scope(world, role), spec, limit=100),
                lambda page, e=expected: {r["span_id"] for r in page.rows} == e,
            )
        )
    return out


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
        out.append(_api(world, role, "GET", url, lambda got: summed(got.json()["data"]["rows"])))
        body = {
            "series": ["request_count.count"],
            "filters": {"relative": None},
            "bucket": None,
            "group_by": ["model"],
            "having": [{"series": series, "op": ">=", "value": 0}],
            "sort": series,
        }
        out.append(
            _api(
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
            _core(
                lambda: run_metrics(world["engine"], _scope(world, role), query),
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
            _core(
                lambda: run_metrics(world["engine"], _scope(world, role), having),
                lambda result: result.frame["request_count.count"].sum() == len(ROWS),
            )
        )
    if field == "total_cost_usd":
        out.append(
            _api(
                world,
                role,
                "GET",
                "/metrics/summary?relative=7d",
                lambda got: "cost" in {k["key"] for k in got.json()["data"]["kpis"]},
            )
        )
    for name in FILTERS_OF[field]:
        n = len(_expected_ids(name))
        value = FILTER_VALUES[name]
        url = f"/metrics?series=request_count.count&bucket=none&relative=all&{name}={value}"
        out.append(
            _api(world, role, "GET", url, lambda got, n=n: _count(got.json()["data"]["rows"]) == n)
        )
        body = {
            "series": ["request_count.count"],
            "filters": {"relative": None, name: _typed(name)},
            "bucket": None,
        }
        out.append(
            _api(
                world,
                role,
                "POST",
                "/metrics/query",
                lambda got, n=n: _count(got.json()["data"]["rows"]) == n,
                json=body,
            )
        )
        spec = FilterSpec(relative=None, **{name: _typed(name)})
        query = MetricQuery(series=("request_count.count",), filters=spec, bucket=None)
        out.append(
            _core(
                lambda query=query: run_metrics(world["engine"], _scope(world, role), query),
                lambda result, n=n: _count(result.frame.to_dicts()) == n,
            )
        )
    return out


def _count(rows: list[dict]) -> int:
    return sum(r["request_count.count"] for r in rows)


def _typed(name: str):
    return FILTER_VALUES[name] if name == "search" else float(FILTER_VALUES[name])


def path_export_create(world, role, field):
    """Naming the field, or filtering on it, when creating an export."""
    out = [
        _api(
            world,
            role,
            "POST",
            "/export/traces",
            lambda got: field in got.json()["data"]["fields"],
            json={"filters": {"relative": None}, "fields": ["span_id", field]},
        ),
        _core(
            lambda: create_export(
                world["engine"], _scope(world, role), ALL, fields=["span_id", field]
            ),
            lambda job: field in job["fields"],
        ),
    ]
    for name in FILTERS_OF[field]:
        filters = {"relative": None, name: _typed(name)}
        out.append(
            _api(
                world,
                role,
                "POST",
                "/export/traces",
                lambda got, name=name: got.json()["data"]["filters"][name] == _typed(name),
                json={"filters": filters, "fields": ["span_id"]},
            )
        )
        out.append(
            _core(
                lambda filters=filters: create_export(
                    world["engine"],
                    _scope(world, role),
                    FilterSpec.from_json(filters),
                    fields=["span_id"],
                ),
                lambda job: True,
            )
        )
    # the default field set: what the role may see, nothing more
    default = _core(
        lambda: create_export(world["engine"], _scope(world, role), ALL),
        lambda job: field in job["fields"],
    )
    return out + _unless_not_offered(default, field, EXPORT_DEFAULT_FIELDS)


def path_export_download(world, role, field):
    """A developer's finished file holding the field, or selected by a filter on it."""
    jobs = [(world["jobs"][("field", field)], field)]
    jobs += [(world["jobs"][("filter", name)], None) for name in FILTERS_OF[field]]
    out = []
    for job_id, column in jobs:

        def holds(got, column=column):
            header = next(csv.reader(io.StringIO(got.text)))
            return column in header if column else len(got.text.splitlines()) > 1

        out.append(_api(world, role, "GET", f"/export/jobs/{job_id}/download", holds))
        # the job itself says whether the caller may download it, and why not
        out.append(
            _api(
                world,
                role,
                "GET",
                f"/export/jobs/{job_id}",
                lambda got: got.json()["data"]["download_refused"] is None,
            )
        )
        out.append(
            _core(
                lambda job_id=job_id: download_target(
                    world["engine"], _scope(world, role), job_id, world["export_dir"]
                ),
                lambda target, column=column: (
                    column in target[0].read_text().splitlines()[0].split(",") if column else True
                ),
            )
        )
    return out


def path_detail(world, role, field):
    def every_span(spans) -> bool:
        return all(field in s for s in spans)

    out = [
        _api(
            world,
            role,
            "GET",
            f"/traces/{world['trace']}",
            lambda got: (
                every_span(got.json()["data"]["spans"])
                and (field != "total_cost_usd" or got.json()["data"]["total_cost_usd"] is not None)
            ),
        ),
        _core(
            lambda: get_trace(world["engine"], _scope(world, role), world["trace"]),
            lambda detail: (
                every_span(detail.spans)
                and (field != "total_cost_usd" or detail.total_cost_usd is not None)
            ),
        ),
    ]
    return out


def path_live(world, role, field):
    """The live feed's span rows (core: the Live page), and each filter on the field there."""
    scope = _scope(world, role)
    since, now = END - timedelta(hours=4), END

    def shows(feed) -> bool:
        return (
            "spans" in feed.shown
            and field in feed.span_fields
            and all(field in r for r in feed.spans)
        )

    feed = _core(lambda: live_feed(world["engine"], scope, ALL, since=since, now=now), shows)
    out = _unless_not_offered(feed, field, LIVE_FIELDS)
    for name in FILTERS_OF[field]:
        spec = FilterSpec(relative=None, **{name: _typed(name)})
        n = len(_expected_ids(name))
        out.append(
            _core(
                lambda spec=spec: live_feed(world["engine"], scope, spec, since=since, now=now),
                lambda feed, n=n: "spans" in feed.shown and len(feed.spans) == n,
            )
        )
    return out


PATHS = {
    "list": (path_list, Permission.TRACES_READ, lambda f: True),
    "sort": (path_sort, Permission.TRACES_READ, lambda f: f in SORTS),
    "filter": (path_filter, Permission.TRACES_READ, lambda f: bool(FILTERS_OF[f])),
    "metric": (
        path_metric,
        Permission.METRICS_READ,
        lambda f: f in METRIC_OF or bool(FILTERS_OF[f]),
    ),
    "export_create": (path_export_create, Permission.EXPORTS_CREATE, lambda f: True),
    "export_download": (path_export_download, Permission.EXPORTS_DOWNLOAD, lambda f: True),
    "detail": (path_detail, Permission.TRACES_READ, lambda f: True),
    # the feed shows a fixed set of columns; other fields can reach it only through a filter
    "live": (path_live, Permission.TRACES_READ, lambda f: f in LIVE_FIELDS or bool(FILTERS_OF[f])),
}
CASES = [
    (role, field, path)
    for path, (_, _, applies) in PATHS.items()
    for field in FIELDS
    if applies(field)
    for role in ROLES
]


@pytest.mark.parametrize(
    ("role", "field", "path"), CASES, ids=[f"{r.value}-{f}-{p}" for r, f, p in CASES]
)
def test_a_role_gets_a_field_on_a_path_only_when_it_may_see_it(world, role, field, path):
    walk, needs, _ = PATHS[path]
    outcomes = walk(world, role, field)
    assert outcomes, "the path produced nothing to judge"
    have = ROLE_PERMISSIONS[role]
    if needs in have and FIELD_NEEDS[field] in have:
        assert set(outcomes) == {PRESENT}, outcomes
    else:
        assert PRESENT not in outcomes, outcomes


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


@pytest.mark.parametrize(
    ("url", "role", "status", "message"),
    [
        ("/traces?sort=total_cost_usd", Role.VIEWER, 403, "sort by total_cost_usd"),
        ("/traces?min_cost_usd=0.05", Role.VIEWER, 403, "'min_cost_usd' reads total_cost_usd"),
        ("/metrics?series=request_count.count&min_cost_usd=0.05", Role.VIEWER, 403, "costs"),
        ("/metrics?series=request_count.count&search=refactor", Role.BILLING, 403, "text"),
        ("/traces?sort=cost", Role.VIEWER, 422, "sort"),
    ],
)
def test_refusals_say_why_in_the_json_envelope(world, url, role, status, message):
    got = world["client"].get(url, headers={"authorization": f"Bearer {world['keys'][role]}"})
    assert got.status_code == status and got.headers["content-type"] == "application/json"
    body = got.json()
    assert body["error"]["code"] == ("forbidden" if status == 403 else "bad_request")
    assert message in body["error"]["message"]


def test_alert_values_from_hidden_fields_are_hidden_on_the_alerts_page_and_live(world):
    """A budget rule's numbers are costs; a rule filtered by a text search counts prompts. A
    role that may not see the field sees the rule's state change, never its numbers."""
    from observatory_core.alerts.history import active_alerts, events
    from observatory_core.alerts.rules import RuleSpec, create_rule, list_rules
    from observatory_core.storage.schema import alert_events, alert_states

    engine, dev = world["engine"], _scope(world, Role.DEVELOPER)
    rules = {
        "budget": create_rule(
            engine, dev, RuleSpec("budget", "total_cost.sum", ">", 0.05, window_s=3600)
        ),
        "text": create_rule(
            engine,
            dev,
            RuleSpec(
                "refactors",
                "request_count.count",
                ">",
                2,
                window_s=3600,
                filters=FilterSpec(relative=None, search="refactor"),
            ),
        ),
        "plain": create_rule(
            engine, dev, RuleSpec("traffic", "request_count.count", ">", 5, window_s=3600)
        ),
    }
    with engine.begin() as conn:
        for name, rule_id in rules.items():
            conn.execute(
                alert_events.insert().values(
                    org_id=world["org"],
                    rule_id=rule_id,
                    group_key="",
                    from_state="pending",
                    to_state="firing",
                    value=0.1 if name == "budget" else 3.0,
                    threshold=0.05 if name == "budget" else 2.0,
                    at=END - timedelta(minutes=5),
                )
            )
            conn.execute(
                alert_states.insert().values(
                    rule_id=rule_id,
                    group_key="",
                    state="firing",
                    since=END - timedelta(minutes=5),
                    last_value=0.1,
                    evaluated_at=END,
                )
            )
    hidden_from = {"budget": {Role.VIEWER}, "text": {Role.BILLING}, "plain": set()}
    for role in ROLES:
        scope = _scope(world, role)
        feed = live_feed(engine, scope, ALL, since=END - timedelta(hours=1), now=END)
        for read in (
            events(engine, scope, since=END - timedelta(hours=1)),
            active_alerts(engine, scope),
            feed.alert_events,
            list_rules(engine, scope),
        ):
            by_rule = {row.get("rule_id", row.get("id")): row for row in read}
            for name, rule_id in rules.items():
                row = by_rule[rule_id]  # the state is shown to every role that reads alerts
                numbers = [row[k] for k in ("value", "last_value", "threshold") if k in row]
                if role in hidden_from[name]:
                    assert row["values_hidden"] and numbers == [None] * len(numbers), (role, name)
                else:
                    assert not row["values_hidden"] and None not in numbers, (role, name)


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
