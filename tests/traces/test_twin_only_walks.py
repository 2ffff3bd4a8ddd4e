"""The Traces list walked page by page where traces made only of twins set aside lie among
the others and in a dense run: every page full while more remain, no trace skipped or listed
twice, both directions, pages of 1 to 50, the total and the days equal to the traces listed,
under filters, a search and roles limited to a project; against a reference from spans mode
and the raw rows (docs/ingestion.md, "A trace made only of twins set aside"). From review."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from observatory_core.accounts.permissions import Role
from observatory_core.filters.spec import FilterSpec
from observatory_core.ingest import persist
from observatory_core.storage.engine import get_engine
from observatory_core.storage.migrate import upgrade
from observatory_core.storage.schema import spans
from observatory_core.traces.days import list_days
from observatory_core.traces.query import list_spans
from tests.helpers import admin_scope, child_of, make_org, span

NOW = datetime.now(UTC).replace(second=0, microsecond=0)
T0 = NOW - timedelta(minutes=50)


def _twins(org: int, project: int, t, same: dict, question: str) -> tuple[dict, dict]:
    """One call sent by two instrumentations, each into a trace of its own: the poorer copy
    (set aside by the keeper rule) and the richer one (counted)."""
    aside = span(
        org, project, t, **same, scope_name="openai.sdk", status="error",
        model="gpt-4o-2024-08-06", provider="openai", input_text=question,
    )  # fmt: skip
    kept = span(
        org, project, t + timedelta(milliseconds=10), **same, scope_name="openllmetry",
        model="gpt-4o", provider="openai", input_text="hello", output_text="hi", user_id="u",
    )  # fmt: skip
    return aside, kept


def _rows(org: int, a: int, b: int) -> list[dict]:
    """64 traces: plain, twins apart (the set-aside copy alone in its trace), a set-aside root
    whose child counts, orphans, a set-aside root with a counted child in project b."""
    rows = []
    for i in range(64):
        t = T0 + timedelta(seconds=40 * i)
        kind = i % 8 if i < 40 else 1  # a dense tail of twin-only traces
        same = dict(service_name="svc", input_tokens=100 + i, output_tokens=30, duration_ms=800.0)
        if kind in (0, 5):  # plain trace, one counted root
            rows.append(
                span(org, a, t, status="error" if kind == 5 else "ok", model="gpt-4o",
                     input_text="plain needle" if i % 3 else None)
            )  # fmt: skip
        elif kind in (1, 4, 7):  # separate twins: the poorer stored copy's trace holds it alone
            rows.extend(_twins(org, a, t, same, "needle only"))
        elif kind == 2:  # nested: the root set aside, its richer child counts -> listed
            root = span(
                org, a, t, **same, scope_name="agent.lib", model="gpt-4o", provider="openai",
                status="error", input_text="needle root",
            )  # fmt: skip
            rows.append(root)
            rows.append(
                child_of(
                    root, t + timedelta(milliseconds=5), **same, scope_name="openai.sdk",
                    model="gpt-4o-2024-08-06", provider="openai", input_text="q", output_text="a",
                )
            )  # fmt: skip
        elif kind == 3:  # orphan: no root
            rows.append(span(org, a, t, parent_span_id="ffffffffffffffff", model="gpt-4o"))
        elif kind == 6:  # root a twin set aside, a counted child in project b
            root, kept = _twins(org, a, t, same, "needle x")
            rows += [root, kept]
            rows.append(
                span(
                    org, b, t + timedelta(milliseconds=100), trace_id=root["trace_id"],
                    parent_span_id=root["span_id"], operation="tool", name="tool",
                    input_tokens=0, output_tokens=0,
                )
            )  # fmt: skip
    return rows


def _engine(kind, tmp_path_factory, request):
    if kind == "sqlite":
        engine = get_engine(f"sqlite:///{tmp_path_factory.mktemp('twin-walks') / 'o.db'}")
    else:
        engine = get_engine(request.getfixturevalue("pg_url"))
    upgrade(engine)
    return engine


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def loaded(request, tmp_path_factory):
    engine = _engine(request.param, tmp_path_factory, request)
    org, (a, b) = make_org(engine, "twin-walks", ("a", "b"))
    patch = pytest.MonkeyPatch()
    patch.setattr(persist, "span_store", lambda: None)
    try:
        persist.write_spans(engine, _rows(org, a, b))
    finally:
        patch.undo()
    yield engine, org, a, b


def _spec(**f):
    return FilterSpec(relative=None, start=T0 - timedelta(minutes=1), end=NOW, **f)


def _expected(engine, scope, spec) -> list[str]:
    """Roots of traces matching (spans mode's traces), with a counted span in the scope."""
    matching, cursor = set(), None
    while True:
        p = list_spans(engine, scope, spec, mode="spans", limit=200, cursor=cursor, now=NOW)
        matching |= {r["trace_id"] for r in p.rows}
        cursor = p.next_cursor
        if not cursor:
            break
    with engine.connect() as conn:
        rows = [
            dict(r)
            for r in conn.execute(select(spans).where(spans.c.org_id == scope.org_id)).mappings()
        ]
    if scope.project_ids is not None:
        rows = [r for r in rows if r["project_id"] in scope.project_ids]
    counting = {r["trace_id"] for r in rows if r["duplicate_of"] is None}
    roots = [
        r
        for r in rows
        if r["parent_span_id"] is None and r["trace_id"] in matching and r["trace_id"] in counting
    ]
    roots.sort(key=lambda r: (r["start_time"], r["id"]))
    return [r["trace_id"] for r in roots]


def _walk(engine, scope, spec, limit, direction):
    """Every page's trace ids in order, and the totals the pages gave."""
    out, totals, cursor = [], set(), None
    for _ in range(500):
        p = list_spans(
            engine,
            scope,
            spec,
            mode="traces",
            limit=limit,
            cursor=cursor,
            direction=direction,
            now=NOW,
            count=True,
        )
        out += [r["trace_id"] for r in p.rows]
        totals.add(p.total)
        if len(p.rows) < limit:
            assert not p.next_cursor
        if p.next_cursor:
            assert len(p.rows) == limit, (len(p.rows), limit)
        cursor = p.next_cursor
        if not cursor:
            return out, totals
    raise AssertionError("no end")


CASES = {
    "window": {},
    "error": {"statuses": ("error",)},
    "ok": {"statuses": ("ok",)},
    "dated": {"models": ("gpt-4o-2024-08-06",)},
    "search": {"search": "needle"},
}


# a set-aside root whose counted child lies in the project the filter leaves out: the
# newest-first page matches traces through their trace totals (docs/scale.md, "Known gaps")
_KNOWN_GAP = pytest.mark.xfail(
    strict=True, reason="newest-first page under a project filter: docs/scale.md, Known gaps"
)


@pytest.mark.parametrize(
    ("case", "who"),
    [
        pytest.param(case, who, marks=_KNOWN_GAP)
        if (case, who) == ("window", "filter_a")
        else (case, who)
        for case in CASES
        for who in ("admin", "proj_a", "proj_b", "filter_a")
    ],
)
def test_walk(loaded, case, who):
    engine, org, a, b = loaded
    filters = dict(CASES[case])
    scope = admin_scope(org)
    if who == "proj_a":
        scope = admin_scope(org, Role.DEVELOPER, project_ids=frozenset({a}))
    elif who == "proj_b":
        scope = admin_scope(org, Role.DEVELOPER, project_ids=frozenset({b}))
    elif who == "filter_a":
        filters["project_ids"] = (a,)
    spec = _spec(**filters)
    want = _expected(engine, scope, spec)
    days = list_days(engine, scope, spec, mode="traces", now=NOW).total
    problems = []
    for direction in ("desc", "asc"):
        ordered = list(reversed(want)) if direction == "desc" else want
        for limit in (1, 2, 3, 5, 7, 50):
            got, totals = _walk(engine, scope, spec, limit, direction)
            if got != ordered:
                problems.append((direction, limit, "rows", len(got), len(ordered)))
            if totals != {len(want)}:
                problems.append((direction, limit, "total", totals, len(want)))
    if days != len(want):
        problems.append(("days", days, len(want)))
    assert not problems, problems
