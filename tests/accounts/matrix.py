"""The role matrix's shared parts: every role x every restricted field x every path, refused or
absent, never present, never a 500.

The restricted fields are `semantic.field_lookups.FIELD_NEEDS` (each field's `needs`: costs need costs:read, prompt and answer
text need traces:read). Each path is walked through the HTTP API (real keys, real routes) and
through the core functions the pages call. A role that may see a field (and use the path at
all) must get it: the same walk is the positive control that shows each path can expose it.
One small hand-made dataset per database (`world` in conftest.py), shared by the whole
session; the walks live in the test_role_matrix_*.py files, one file per kind of path.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from starlette.testclient import TestClient

from observatory_core.accounts.permissions import ROLE_PERMISSIONS, Permission, Role
from observatory_core.accounts.scope import Scope
from observatory_core.base.errors import PermissionDenied
from observatory_core.filters.spec import FilterSpec
from observatory_core.metrics.catalog import METRICS
from observatory_core.reports.live import SPAN_FIELDS as LIVE_FIELDS
from observatory_core.semantic.field_lookups import FIELD_NEEDS, FILTER_READS
from observatory_core.traces.query import SORTS
from tests.helpers import END, span

ROLES = tuple(Role)
FIELDS = tuple(FIELD_NEEDS)
ALL = FilterSpec(relative=None)
# A filter value per filter that reads a restricted field, and the spans it selects.
FILTER_VALUES = {"min_cost_usd": "0.05", "max_cost_usd": "0.015", "search": "refactor"}
# field -> the metric series computed from it
# the first declared metric that reads each restricted field (a span metric: the walk charts it
# beside span series, and one query charts one subject)
METRIC_OF: dict[str, str] = {}
for _m in METRICS.values():
    for _f in _m.reads:
        if _f in FIELD_NEEDS:
            METRIC_OF.setdefault(_f, f"{_m.name}.sum")
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

# path -> (the permission the path itself needs, which fields can appear on it)
PATHS = {
    "list": (Permission.TRACES_READ, lambda f: True),
    "sort": (Permission.TRACES_READ, lambda f: f in SORTS),
    "filter": (Permission.TRACES_READ, lambda f: bool(FILTERS_OF[f])),
    "metric": (Permission.METRICS_READ, lambda f: f in METRIC_OF or bool(FILTERS_OF[f])),
    "export_create": (Permission.EXPORTS_CREATE, lambda f: True),
    "export_download": (Permission.EXPORTS_DOWNLOAD, lambda f: True),
    "detail": (Permission.TRACES_READ, lambda f: True),
    # the feed shows a fixed set of columns; other fields can reach it only through a filter
    "live": (Permission.TRACES_READ, lambda f: f in LIVE_FIELDS or bool(FILTERS_OF[f])),
}
CASES = [
    (role, field, path)
    for path, (_, applies) in PATHS.items()
    for field in FIELDS
    if applies(field)
    for role in ROLES
]


def cases(*paths: str):
    """Parametrize a matrix test over every (role, field, path) of `paths`."""
    assert set(paths) <= set(PATHS), paths
    chosen = [c for c in CASES if c[2] in paths]
    return pytest.mark.parametrize(
        ("role", "field", "path"), chosen, ids=[f"{r.value}-{f}-{p}" for r, f, p in chosen]
    )


def may_see(role: Role, field: str, path: str) -> bool:
    """Whether the role may use the path at all and see the field."""
    have = ROLE_PERMISSIONS[role]
    return PATHS[path][0] in have and FIELD_NEEDS[field] in have


def make_rows(org: int, project: int) -> tuple[list[dict], str]:
    """The six spans of ROWS, and the id of trace "a"."""
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


def expected_ids(spec_name: str) -> set[str]:
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


# ---- outcomes ------------------------------------------------------------------------------
REFUSED, ABSENT, PRESENT = "refused", "absent", "present"


def api(world, role: Role, method: str, url: str, present, **kwargs) -> str:
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


def core(call, present) -> str:
    try:
        result = call()
    except PermissionDenied as exc:
        assert str(exc)
        return REFUSED
    return PRESENT if present(result) else ABSENT


def in_rows(field: str):
    return lambda got: any(field in r for r in got.json()["data"])


def scope_of(world, role: Role) -> Scope:
    return Scope(org_id=world["org"], role=role, username=f"{role.value}-user")


def unless_not_offered(outcome: str, field: str, offered) -> list[str]:
    """A default set (columns, export fields, the live feed's) holds only some fields: a
    visible field outside it is absent for everyone, which says nothing about roles."""
    return [] if outcome == ABSENT and field not in offered else [outcome]


def count(rows: list[dict]) -> int:
    return sum(r["request_count.count"] for r in rows)


def typed(name: str):
    return FILTER_VALUES[name] if name == "search" else float(FILTER_VALUES[name])
