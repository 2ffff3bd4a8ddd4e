"""Users and sessions against polars over the raw rows, on SQLite, PostgreSQL and the span
store (`explorer`): each figure, the filter honoured as the explorer honours it, sort, search,
paging, roles and other orgs; on the span store, a racing writer's later copy counted once."""

from __future__ import annotations

from datetime import timedelta

import polars as pl
import pytest

from observatory_core.accounts.permissions import Role
from observatory_core.base.errors import PermissionDenied, UserError
from observatory_core.filters.spec import FilterSpec
from observatory_core.traces.query import list_spans
from observatory_core.traces.sessions import get_session, list_sessions
from observatory_core.traces.users import list_users
from tests.chdb_store import write_later_copy
from tests.helpers import admin_scope, child_of, span
from tests.reference import reference_ids, reference_llm_calls
from tests.traces.conftest import NOW, globex_project

SPECS = [
    FilterSpec(relative="7d"),
    FilterSpec(relative="24h", environments=("production",)),
    FilterSpec(relative="7d", models=("gpt-4o",), statuses=("ok",)),
]


def _visible(explorer, projects=None) -> pl.DataFrame:
    """The raw rows a scope limited to `projects` sees (None: the whole org's)."""
    df = explorer["df"]
    return df if projects is None else df.filter(pl.col("project_id").is_in(list(projects)))


def _matching(explorer, spec: FilterSpec, projects=None) -> pl.DataFrame:
    df = _visible(explorer, projects)
    ids = reference_ids(df, spec, NOW, explorer["acme"])
    return df.filter(pl.col("id").is_in(list(ids)) & pl.col("duplicate_of").is_null())


def _reference_users(explorer, spec: FilterSpec, projects=None) -> dict[str, dict]:
    rows = _matching(explorer, spec, projects).filter(pl.col("user_id").is_not_null())
    calls = pl.col("id").is_in(list(reference_llm_calls(explorer["df"])))
    per_user = rows.group_by("user_id").agg(
        calls.sum().alias("request_count"),
        pl.when(calls).then(pl.col("total_cost_usd")).otherwise(0.0).sum().alias("total_cost_usd"),
        pl.when(calls).then(pl.col("total_tokens")).otherwise(0).sum().alias("total_tokens"),
        (calls & (pl.col("status") == "error")).sum().alias("error_count"),
        pl.col("trace_id").n_unique().alias("trace_count"),
        pl.col("start_time").min().alias("first_seen"),
        pl.col("start_time").max().alias("last_seen"),
    )
    return {r["user_id"]: r for r in per_user.to_dicts()}


def _reference_sessions(explorer, spec: FilterSpec, projects=None) -> dict[str, dict]:
    df = _visible(explorer, projects).filter(
        (pl.col("org_id") == explorer["acme"]) & pl.col("duplicate_of").is_null()
    )
    trees = df.group_by("trace_id").agg(
        pl.col("start_time").min().alias("first"),
        pl.col("end_time").max().alias("last"),
        pl.col("total_cost_usd").sum().alias("cost"),
        (pl.col("status") == "error").sum().alias("errors"),
    )
    rows = _matching(explorer, spec, projects).filter(pl.col("session_id").is_not_null())
    pairs = rows.group_by("session_id", "trace_id").agg(pl.col("user_id").min())
    per = (
        pairs.join(trees, on="trace_id")
        .group_by("session_id")
        .agg(
            pl.col("user_id").min(),
            pl.len().alias("trace_count"),
            pl.col("first").min().alias("first_seen"),
            pl.col("last").max().alias("last_seen"),
            pl.col("cost").sum().alias("total_cost_usd"),
            pl.col("errors").sum().alias("error_count"),
        )
    )
    return {r["session_id"]: r for r in per.to_dicts()}


@pytest.mark.parametrize("spec", SPECS, ids=["7d", "24h-production", "gpt-4o-ok"])
def test_users_figures_equal_polars(explorer, spec):
    scope = admin_scope(explorer["acme"])
    page = list_users(explorer["engine"], scope, spec, limit=1000, now=NOW)
    expected = _reference_users(explorer, spec)
    assert page.total == len(expected) == len(page.rows) > 0
    for row in page.rows:
        want = expected[row["user_id"]]
        for key in ("request_count", "total_tokens", "error_count", "trace_count"):
            assert row[key] == want[key], (row["user_id"], key)
        assert row["total_cost_usd"] == pytest.approx(want["total_cost_usd"])
        assert row["first_seen"] == want["first_seen"] and row["last_seen"] == want["last_seen"]


@pytest.mark.parametrize("spec", SPECS, ids=["7d", "24h-production", "gpt-4o-ok"])
def test_sessions_figures_equal_polars(explorer, spec):
    scope = admin_scope(explorer["acme"])
    page = list_sessions(explorer["engine"], scope, spec, limit=1000, now=NOW)
    expected = _reference_sessions(explorer, spec)
    assert page.total == len(expected) == len(page.rows) > 0
    for row in page.rows:
        want = expected[row["session_id"]]
        assert row["trace_count"] == want["trace_count"]
        assert row["error_count"] == want["error_count"]
        assert row["user_id"] == want["user_id"]
        assert row["total_cost_usd"] == pytest.approx(want["total_cost_usd"])
        assert row["first_seen"] == want["first_seen"] and row["last_seen"] == want["last_seen"]
        span = (want["last_seen"] - want["first_seen"]).total_seconds() * 1000
        assert row["duration_ms"] == pytest.approx(span, abs=0.01)


def test_a_project_filter_and_a_project_limited_scope(explorer):
    """Through the covering indexes (time and project): a project filter, and a user who may
    see one project only, whose traces' totals cover that project's spans alone."""
    engine, (first, _) = explorer["engine"], explorer["projects"]
    spec = FilterSpec(relative="7d", project_ids=(first,))
    for scope, projects in (
        (admin_scope(explorer["acme"]), None),
        (admin_scope(explorer["acme"], project_ids=frozenset({first})), (first,)),
    ):
        users = list_users(engine, scope, spec, limit=1000, now=NOW).rows
        want = _reference_users(explorer, spec, projects)
        assert {r["user_id"]: r["request_count"] for r in users} == {
            u: w["request_count"] for u, w in want.items()
        }
        sessions = list_sessions(engine, scope, spec, limit=1000, now=NOW).rows
        want = _reference_sessions(explorer, spec, projects)
        assert len(sessions) == len(want) > 0
        for row in sessions:
            assert row["total_cost_usd"] == pytest.approx(want[row["session_id"]]["total_cost_usd"])
            assert row["trace_count"] == want[row["session_id"]]["trace_count"]


def test_a_users_traces_are_the_explorers_for_that_user(explorer):
    """The link from a user to the explorer: same filter plus the user, traces mode (and the
    traces of the spans the explorer lists in spans mode)."""
    engine, scope, spec = (
        explorer["engine"],
        admin_scope(explorer["acme"]),
        FilterSpec(relative="7d"),
    )
    user = list_users(engine, scope, spec, limit=1, now=NOW).rows[0]
    mine = spec.replace(user_ids=(user["user_id"],))
    listed = list_spans(engine, scope, mine, limit=1000, now=NOW)
    assert len({r["trace_id"] for r in listed.rows}) == user["trace_count"]
    trees = list_spans(engine, scope, mine, mode="traces", limit=1000, now=NOW)
    assert len(trees.rows) == user["trace_count"]


def test_sort_search_and_pages(explorer):
    engine, scope = explorer["engine"], admin_scope(explorer["acme"])
    spec = FilterSpec(relative="7d")
    whole = list_users(engine, scope, spec, sort="total_cost_usd", limit=1000, now=NOW).rows
    costs = [r["total_cost_usd"] for r in whole]
    assert costs == sorted(costs, reverse=True)
    first = list_users(engine, scope, spec, sort="total_cost_usd", limit=5, now=NOW)
    second = list_users(engine, scope, spec, sort="total_cost_usd", limit=5, offset=5, now=NOW)
    assert [r["user_id"] for r in first.rows + second.rows] == [r["user_id"] for r in whole[:10]]
    assert first.next_offset == 5 and first.total == len(whole)
    found = list_users(engine, scope, spec, id_contains="USER-1", limit=1000, now=NOW).rows
    assert {r["user_id"] for r in found} == {
        r["user_id"] for r in whole if "user-1" in r["user_id"]
    }
    for literal in ("%", "_", "\\", "r_1"):  # taken literally: no wildcard, no escape
        assert list_users(engine, scope, spec, id_contains=literal, now=NOW).total == 0
    ascending = list_sessions(engine, scope, spec, sort="trace_count", direction="asc", now=NOW)
    counts = [r["trace_count"] for r in ascending.rows]
    assert counts == sorted(counts)


def test_bad_input_is_refused_with_a_message(explorer):
    engine, scope = explorer["engine"], admin_scope(explorer["acme"])
    with pytest.raises(UserError, match="sort by"):
        list_users(engine, scope, FilterSpec(), sort="password")
    with pytest.raises(UserError, match="Page size"):
        list_sessions(engine, scope, FilterSpec(), limit=5000)
    with pytest.raises(UserError, match="Offset"):
        list_users(engine, scope, FilterSpec(), offset=10**7)


def test_viewer_sees_no_cost_and_may_not_sort_by_it(explorer):
    engine, viewer = explorer["engine"], admin_scope(explorer["acme"], Role.VIEWER)
    users = list_users(engine, viewer, FilterSpec(relative="7d"), now=NOW)
    sessions = list_sessions(engine, viewer, FilterSpec(relative="7d"), now=NOW)
    assert users.rows and all("total_cost_usd" not in r for r in users.rows)
    assert sessions.rows and all("total_cost_usd" not in r for r in sessions.rows)
    with pytest.raises(PermissionDenied, match="costs"):
        list_users(engine, viewer, FilterSpec(), sort="total_cost_usd")
    with pytest.raises(PermissionDenied, match="costs"):
        list_sessions(engine, viewer, FilterSpec(min_cost_usd=0.1))
    session = get_session(engine, viewer, sessions.rows[0]["session_id"])
    assert session.total_cost_usd is None and all("total_cost_usd" not in t for t in session.turns)
    assert any(t["input_text"] for t in session.turns)


def test_billing_sees_costs_but_no_text(explorer):
    engine, billing = explorer["engine"], admin_scope(explorer["acme"], Role.BILLING)
    sessions = list_sessions(engine, billing, FilterSpec(relative="7d"), now=NOW)
    session = get_session(engine, billing, sessions.rows[0]["session_id"])
    assert session.total_cost_usd is not None and not session.text_shown
    assert all("input_text" not in t and "output_text" not in t for t in session.turns)
    with pytest.raises(PermissionDenied):
        list_users(engine, billing, FilterSpec(search="refund"))


def test_other_orgs_users_and_sessions_never_appear(explorer):
    engine = explorer["engine"]
    globex = explorer["df"].filter(pl.col("org_id") == explorer["globex"])
    acme = explorer["df"].filter(pl.col("org_id") == explorer["acme"])
    # the fixture names users and sessions alike in both orgs: compare figures, not names
    every = FilterSpec(relative=None)
    globex_users = list_users(engine, admin_scope(explorer["globex"]), every, limit=1000)
    per_user = globex.group_by("user_id").agg(pl.col("trace_id").n_unique())
    assert {r["user_id"]: r["trace_count"] for r in globex_users.rows} == dict(per_user.rows())
    only_acme = set(acme["trace_id"]) - set(globex["trace_id"])
    session_id = next(
        r["session_id"] for r in acme.to_dicts() if r["trace_id"] in only_acme and r["session_id"]
    )
    seen = get_session(engine, admin_scope(explorer["globex"]), session_id)
    mine = set(globex.filter(pl.col("session_id") == session_id)["trace_id"])
    assert seen is None or {t["trace_id"] for t in seen.turns} == mine
    assert not {t["trace_id"] for t in (seen.turns if seen else [])} & only_acme


def test_a_session_reads_as_a_conversation_in_order(explorer):
    engine, scope = explorer["engine"], admin_scope(explorer["acme"])
    df = explorer["df"].filter(pl.col("org_id") == explorer["acme"])
    session_id = df["session_id"].drop_nulls()[0]
    session = get_session(engine, scope, session_id)
    traces = set(df.filter(pl.col("session_id") == session_id)["trace_id"])
    assert [t["trace_id"] for t in session.turns] == sorted(
        traces, key=lambda t: (df.filter(pl.col("trace_id") == t)["start_time"].min(), t)
    )
    assert session.trace_count == len(traces) and session.omitted == 0
    for turn in session.turns:
        tree = df.filter(pl.col("trace_id") == turn["trace_id"])
        root = tree.filter(pl.col("parent_span_id").is_null())
        if root.height and root["input_text"][0] is not None:
            assert turn["input_text"] == root["input_text"][0]
        assert turn["name"] == (root["name"][0] if root.height else None)
        assert turn["span_count"] == tree.height
        assert turn["total_cost_usd"] == pytest.approx(tree["total_cost_usd"].sum())
    assert get_session(engine, scope, "no-such-session") is None


def test_a_later_copy_of_a_span_counts_once_as_its_newest_copy(explorer):
    """A racing writer's later copy moved a call to another user, made it an error and raised
    its cost: the user lists, the session's figures and the conversation count it once, as
    the newest copy says."""
    if explorer["store"] != "chdb":
        pytest.skip("only the span store keeps copies of a span")
    globex, project = globex_project(explorer)
    common = {"session_id": "race-session", "model": "gpt-4o", "input_tokens": 10}
    root = span(globex, project, NOW - timedelta(hours=2), user_id="race-a", **common)
    child = child_of(
        root, NOW - timedelta(hours=2), user_id="race-a", input_cost_usd=0.25, **common
    )
    root["input_cost_usd"] = 0.5
    explorer["write"]([root, child])
    try:
        raced = {**root, "user_id": "race-b", "status": "error", "total_cost_usd": 1.0}
        write_later_copy(explorer["span_store"], [raced])
        engine, scope, every = explorer["engine"], admin_scope(globex), FilterSpec(relative=None)
        users = {
            r["user_id"]: r for r in list_users(engine, scope, every, id_contains="race-").rows
        }
        assert {u: (r["request_count"], r["error_count"]) for u, r in users.items()} == {
            "race-a": (1, 0),
            "race-b": (1, 1),
        }
        assert users["race-b"]["total_cost_usd"] == pytest.approx(1.0)
        assert users["race-a"]["total_cost_usd"] == pytest.approx(0.25)
        (row,) = list_sessions(engine, scope, every, id_contains="race-session").rows
        assert (row["trace_count"], row["error_count"], row["user_id"]) == (1, 1, "race-a")
        assert row["total_cost_usd"] == pytest.approx(1.25)
        errors_only = every.replace(statuses=("error",))
        (row,) = list_sessions(engine, scope, errors_only, id_contains="race-session").rows
        assert row["user_id"] == "race-b" and row["total_cost_usd"] == pytest.approx(1.25)
        session = get_session(engine, scope, "race-session")
        (turn,) = session.turns
        assert (turn["span_count"], turn["error_count"]) == (2, 1)
        assert turn["total_cost_usd"] == pytest.approx(1.25)
        assert session.users == ["race-a", "race-b"]
        # the link into the explorer (a look-up of the user, narrowed to its traces first)
        for user, want in (("race-a", child), ("race-b", root)):
            mine = every.replace(user_ids=(user,))
            listed = list_spans(engine, scope, mine, limit=10, now=NOW).rows
            assert [(r["span_id"], r["user_id"]) for r in listed] == [(want["span_id"], user)]
        # a later copy that moves the child to another session: found there, its tree whole
        write_later_copy(explorer["span_store"], [{**child, "session_id": "race-moved"}])
        moved = get_session(engine, scope, "race-moved")
        assert [(t["trace_id"], t["span_count"]) for t in moved.turns] == [(root["trace_id"], 2)]
        assert moved.users == ["race-a"]
        assert get_session(engine, scope, "race-session").users == ["race-b"]
    finally:
        explorer["remove"]([root["trace_id"]])


def test_a_twin_set_aside_counts_in_no_turn_and_names_none(explorer):
    """A root set aside as a twin (an SDK's wrapper of the library's own span): the turn counts
    its child alone and takes no name from it, as the trace totals do, on every store."""
    globex, project = globex_project(explorer)
    root = span(
        globex,
        project,
        NOW - timedelta(hours=3),
        name="sdk wrapper (twin)",
        session_id="twin-session",
        input_cost_usd=0.5,
        duplicate_of="f" * 16,
        duplicate_trace_id="f" * 32,
    )
    child = child_of(
        root,
        NOW - timedelta(hours=3),
        name="library call",
        session_id="twin-session",
        input_cost_usd=0.25,
    )
    explorer["write"]([root, child])
    if explorer["store"] != "chdb":  # a twin is set aside after its write: totals refolded
        from observatory_core.rollups.maintain import rebuild

        rebuild(explorer["engine"])
    try:
        session = get_session(explorer["engine"], admin_scope(globex), "twin-session")
        (turn,) = session.turns
        assert (turn["name"], turn["span_count"]) == (None, 1)
        assert turn["total_cost_usd"] == pytest.approx(0.25)
    finally:
        explorer["remove"]([root["trace_id"]])


def test_an_id_holding_wildcards_is_found_by_itself_alone(explorer):
    """`%`, `_` and a backslash in a user id are matched as written: each such id is found by
    its own text, and by nothing that only a wildcard would match, on every store."""
    globex, project = globex_project(explorer)
    ids = ["lit-a_b", "lit-a%b", "lit-a\\b", "lit-axb"]
    rows = [span(globex, project, NOW - timedelta(hours=1), user_id=u, model="gpt-4o") for u in ids]
    explorer["write"](rows)
    try:
        engine, scope = explorer["engine"], admin_scope(globex)
        every = FilterSpec(relative=None)
        for needle, want in (
            ("a_b", {"lit-a_b"}),
            ("a%b", {"lit-a%b"}),
            ("a\\b", {"lit-a\\b"}),
            ("axb", {"lit-axb"}),
            ("lit-a", set(ids)),
        ):
            found = list_users(engine, scope, every, id_contains=needle, now=NOW).rows
            assert {r["user_id"] for r in found} == want, needle
    finally:
        explorer["remove"]([r["trace_id"] for r in rows])


def test_a_sessions_traces_are_summed_whole_beyond_the_window(explorer):
    """A trace with a span of the session in the window, its root started before the window
    and a late span after it: the Sessions list finds the trace by the window, then sums its
    whole tree (every span, as polars sums the raw rows), not the window's spans alone."""
    globex, project = globex_project(explorer)
    common = {"session_id": "edge-session", "model": "gpt-4o", "input_tokens": 10}
    root = span(globex, project, NOW - timedelta(hours=30), input_cost_usd=0.5, **common)
    tree = {"trace_id": root["trace_id"], "parent_span_id": root["span_id"], **common}
    inside = span(globex, project, NOW - timedelta(hours=3), input_cost_usd=0.25, **tree)
    late = span(
        globex, project, NOW - timedelta(minutes=30), input_cost_usd=0.125, status="error", **tree
    )
    rows = [root, inside, late]
    explorer["write"](rows)
    try:
        window = FilterSpec(
            relative=None, start=NOW - timedelta(hours=24), end=NOW - timedelta(hours=1)
        )
        (row,) = list_sessions(
            explorer["engine"], admin_scope(globex), window, id_contains="edge-session", now=NOW
        ).rows
        df = pl.DataFrame(rows)
        assert row["trace_count"] == df["trace_id"].n_unique() == 1
        assert row["total_cost_usd"] == pytest.approx(df["total_cost_usd"].sum())
        assert row["error_count"] == (df["status"] == "error").sum() == 1
        assert row["first_seen"] == df["start_time"].min() == root["start_time"]
        assert row["last_seen"] == df["end_time"].max() == late["end_time"]
        # a window holding none of its spans (between the root and the rest) finds no session
        before = window.replace(end=NOW - timedelta(hours=5), start=NOW - timedelta(hours=6))
        assert not list_sessions(
            explorer["engine"], admin_scope(globex), before, id_contains="edge-session", now=NOW
        ).rows
    finally:
        explorer["remove"]([root["trace_id"]])
