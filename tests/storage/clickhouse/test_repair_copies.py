"""`clickhouse-repair-copies`: copies that racing writers left (`writes.write_spans` without a
turn, each writer's check run before the other's insert) make the spans list, the rollups, the
trace totals and the hours' users and sessions wrong against polars on the distinct spans
(each one's newest copy, the one reads pick); after the command they equal polars. `--check`
finds exactly the seeded spans, a second run finds nothing, an org filter leaves the other org
alone, a run stopped part-way ends right when run again, an unknown org is one line."""

from __future__ import annotations

from datetime import timedelta

import polars as pl
import pytest
from sqlalchemy import insert

from observatory_core.__main__ import main
from observatory_core.accounts.permissions import Role
from observatory_core.accounts.scope import Scope
from observatory_core.base.settings import get_settings
from observatory_core.demo.catalog import ORGS
from observatory_core.storage.clickhouse import repair_copies, view_gaps, writes
from observatory_core.storage.clickhouse.reads import Window, list_spans
from observatory_core.storage.clickhouse.writes import write_spans
from observatory_core.storage.engine import get_engine
from observatory_core.storage.migrate import upgrade
from observatory_core.storage.schema import orgs
from tests.storage.clickhouse.conftest import END, demo_rows, written_ago
from tests.storage.clickhouse.test_view_gaps import (
    _rollups,
    _same,
    _traces,
    _want_rollups,
    _want_traces,
)

ROWS = demo_rows(1500, seed=71)
A, B = 1, 2  # the first two demo orgs' ids (conftest.IDS)
MINE = [r for r in ROWS if r["org_id"] == A]
THEIRS = [r for r in ROWS if r["org_id"] == B]
# a trace with spans in two projects, a copy of one of its spans (below) in the first: its
# rows in the other project (where no span has a copy) must stay
SHARED = next(r for r in MINE[200:] if sum(s["trace_id"] == r["trace_id"] for s in MINE) > 2)
OTHER_PROJECT = 150
for _row in MINE:
    if _row["trace_id"] == SHARED["trace_id"] and _row is not SHARED:
        _row["project_id"] = OTHER_PROJECT
# what racing writers stored a second time: another cost, another start (an hour and 7
# minutes later; 40 days earlier, in another month's partition), another user and session
RACED = (
    [dict(r, total_cost_usd=r["total_cost_usd"] * 3 + 0.25) for r in MINE[0:30]]
    + [dict(r, start_time=r["start_time"] + timedelta(minutes=67)) for r in MINE[30:50]]
    + [dict(r, start_time=r["start_time"] - timedelta(days=40)) for r in MINE[50:55]]
    + [dict(r, user_id="raced-user", session_id="raced-session") for r in MINE[55:70]]
    + [dict(r, total_cost_usd=r["total_cost_usd"] + 1.0) for r in THEIRS[0:12]]
    + [dict(SHARED, total_tokens=SHARED["total_tokens"] + 11)]
)
SEEDED = {(r["org_id"], r["trace_id"], r["span_id"]) for r in RACED}
WINDOW = Window(END - timedelta(days=60), END + timedelta(days=1))
GRAINS = ("1min", "1hour", "1day")


def _newest() -> list[dict]:
    """Each span's newest copy: the racing writer's, written last."""
    latest = {(r["org_id"], r["trace_id"], r["span_id"]): r for r in [*ROWS, *RACED]}
    return [r for r in latest.values() if r["duplicate_of"] is None]


def _of(org: int) -> list[dict]:
    return [r for r in _newest() if r["org_id"] == org]


@pytest.fixture(scope="module")
def raced(chdb_store, tmp_path_factory):
    """The store with every demo span once, then the racing copies; a SQLite DATABASE_URL
    holding the demo orgs under the store's ids."""
    store = chdb_store
    with written_ago(2):  # long finished: their views have run (`view_gaps.SETTLE`)
        assert write_spans(store, ROWS) == len(ROWS)
    with written_ago(1), pytest.MonkeyPatch.context() as patch:
        # each racing writer asked before the other's insert: nothing stored yet
        patch.setattr(writes, "stored_starts", lambda store, batch: {})
        assert write_spans(store, RACED) == len(RACED)
    url = f"sqlite:///{tmp_path_factory.mktemp('repair') / 'app.db'}"
    engine = get_engine(url)
    upgrade(engine)
    with engine.begin() as conn:
        for i, org in enumerate(ORGS, start=1):
            conn.execute(insert(orgs).values(id=i, slug=org.slug, name=org.name))
    return store, url


@pytest.fixture
def cli(raced, monkeypatch, chdb_session):
    store, url = raced
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.delenv("OBSERVATORY_SPAN_STORE", raising=False)
    get_settings.cache_clear()
    yield store, ["--to", chdb_session.url(store.database)]
    get_settings.cache_clear()


def _listed(store, org: int) -> list[tuple]:
    scope = Scope(org_id=org, role=Role.ADMIN)
    rows, after = [], None
    while True:
        page = list_spans(store, scope, WINDOW, after=after, limit=1000)
        rows += [
            (r["start_time"], r["trace_id"], r["span_id"], r["total_cost_usd"]) for r in page.rows
        ]
        if page.next is None:
            return rows
        after = page.next


def _want_listed(org: int) -> list[tuple]:
    frame = pl.DataFrame(
        [r for r in _of(org) if WINDOW.start <= r["start_time"] < WINDOW.end],
        infer_schema_length=None,
    ).sort("start_time", "trace_id", "span_id", descending=True)
    return list(frame.select("start_time", "trace_id", "span_id", "total_cost_usd").iter_rows())


def _actors(store, org: int) -> set:
    rows = store.client.query(
        "SELECT DISTINCT toUnixTimestamp(bucket_start), project_id, kind, actor "
        f"FROM {store.table('rollup_actors_1hour')} WHERE org_id = {org}"
    ).result_rows
    return set(rows)


def _want_actors(org: int) -> set:
    out = set()
    for r in _of(org):
        hour = int(r["start_time"].timestamp()) // 3600 * 3600
        for kind in ("user", "session"):
            if r[f"{kind}_id"] is not None:
                out.add((hour, r["project_id"], kind, r[f"{kind}_id"]))
    return out


def _right(store, org: int) -> dict[str, bool]:
    """Which of what a user reads equals polars on the org's distinct spans."""
    out = {"list": _listed(store, org) == _want_listed(org)}
    for grain in GRAINS:
        out[grain] = _same(_rollups(store, grain, org), _want_rollups(grain, _of(org)))
    out["traces"] = _same(_traces(store, org), _want_traces(_of(org)))
    out["actors"] = _actors(store, org) == _want_actors(org)
    return out


def _found(store, org: int) -> set:
    return {
        (org, c.trace_id, c.span_id)
        for month in repair_copies.store_months(store)
        for c in repair_copies.find_copies(store, org, month)
    }


def test_the_copies_are_found_then_put_right_org_by_org(cli, capsys):
    store, to = cli
    # before: every read of org A is wrong, as is org B's cost
    assert not any(_right(store, A).values()), _right(store, A)
    wrong_b = _right(store, B)
    assert not wrong_b["1min"] and not wrong_b["traces"]

    assert main(["clickhouse-repair-copies", *to, "--check"]) == 1
    out = capsys.readouterr().out
    assert f"{len(SEEDED):,} spans stored more than once" in out
    # the month 40 days earlier, the org by its slug
    assert f"2026-10 {ORGS[0].slug}: 5 spans stored more than once" in out
    assert _found(store, A) | _found(store, B) == SEEDED
    assert not any(_right(store, A).values())  # --check changed nothing

    # one org: the other keeps its copies and its numbers
    b_rollups = {g: _rollups(store, g, B) for g in GRAINS}
    b_traces = _traces(store, B)
    assert main(["clickhouse-repair-copies", *to, "--org", ORGS[0].slug]) == 0
    out = capsys.readouterr().out
    assert "Kept only the newest copy of 71 spans (of 71" in out
    assert all(_right(store, A).values()), _right(store, A)
    assert _found(store, A) == set()
    assert _found(store, B) == {k for k in SEEDED if k[0] == B}
    assert {g: _rollups(store, g, B) for g in GRAINS} == b_rollups
    assert _traces(store, B) == b_traces

    assert main(["clickhouse-repair-copies", *to]) == 0
    assert all(_right(store, B).values()), _right(store, B)
    assert all(_right(store, A).values())
    ((count,),) = store.client.query(f"SELECT count() FROM {store.table('spans')}").result_rows
    assert count == len({(r["org_id"], r["trace_id"], r["span_id"]) for r in ROWS})

    capsys.readouterr()
    assert main(["clickhouse-repair-copies", *to, "--check"]) == 0
    assert "No span is stored more than once." in capsys.readouterr().out


@pytest.mark.parametrize("stop", ["before the fill", "before the copies go"])
def test_a_run_stopped_part_way_ends_right_when_run_again(cli, monkeypatch, capsys, stop):
    """Stopped after the views' rows of the copies' hours and traces were deleted (before they
    were filled again, or after, before the older copies were deleted): the copies are still
    there, so the next run does it all again and ends right."""
    store, to = cli
    org = A
    mine = MINE[100:125]
    copies = [
        dict(r, start_time=r["start_time"] + timedelta(minutes=3), total_tokens=7) for r in mine
    ]
    with written_ago(0.5), monkeypatch.context() as patch:
        patch.setattr(writes, "stored_starts", lambda store, batch: {})
        assert write_spans(store, copies) == len(copies)
    latest = {
        (r["trace_id"], r["span_id"]): r for r in [*ROWS, *RACED, *copies] if r["org_id"] == org
    }
    want = [r for r in latest.values() if r["duplicate_of"] is None]
    client = type(getattr(store.client, "_client", store.client))  # chDB's, under its turn
    real = client.command
    spans = f"DELETE FROM {store.table('spans')} "

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    def stopped_at_copies(self, statement, *args, **kwargs):
        if str(statement).startswith(spans):
            raise KeyboardInterrupt
        return real(self, statement, *args, **kwargs)

    with monkeypatch.context() as patch:
        if stop == "before the fill":
            patch.setattr(view_gaps, "fill_gaps", stopped)
        else:
            patch.setattr(client, "command", stopped_at_copies)
        assert main(["clickhouse-repair-copies", *to, "--org", ORGS[0].slug]) == 130
    assert "run the same command again" in capsys.readouterr().out
    assert _found(store, org)  # the copies are still there
    if stop == "before the fill":
        assert not _same(_rollups(store, "1hour", org), _want_rollups("1hour", want))

    assert main(["clickhouse-repair-copies", *to, "--org", ORGS[0].slug]) == 0
    for grain in GRAINS:
        assert _same(_rollups(store, grain, org), _want_rollups(grain, want)), grain
    assert _same(_traces(store, org), _want_traces(want))
    assert _found(store, org) == set()


def test_an_unknown_org_is_one_line(cli, capsys):
    _, to = cli
    assert main(["clickhouse-repair-copies", *to, "--org", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: No org 'nope'") and len(err.strip().splitlines()) == 1


def test_copies_that_tie_on_the_newest_version_are_reported_and_kept(chdb_session):
    """Two copies written in the same microsecond: reads may pick either, so neither is the
    one to keep; both stay (no span is lost) and the month says so. A store of its own, so
    the other tests' runs over every org do not meet it."""
    from observatory_core.storage.clickhouse import layout
    from observatory_core.storage.clickhouse.writes import as_columns

    store = chdb_session.store("ties")
    try:
        row = MINE[300]
        with written_ago(1):
            assert write_spans(store, [row]) == 1
        ((version,),) = store.client.query(
            f"SELECT max(version) FROM {store.table('spans')}"
        ).result_rows
        names = layout.span_column_names()
        twin = dict(row, start_time=row["start_time"] + timedelta(seconds=9))
        store.client.insert(
            store.table("spans"),
            as_columns([twin], names, version, lambda org, project: 0),
            column_names=list(names),
            column_oriented=True,
        )
        (month,) = repair_copies.store_months(store)
        result = repair_copies.repair_month(store, A, month)
        assert (result.spans, result.tied, result.copies) == (1, 1, 0)
        ((copies,),) = store.client.query(f"SELECT count() FROM {store.table('spans')}").result_rows
        assert copies == 2
    finally:
        chdb_session.drop(store)


def test_a_server_before_24_4_is_sent_mutations_sync_with_each_delete(chdb_session):
    """ClickHouse before 24.4 has no `lightweight_deletes_sync` and refuses a statement that
    sends it: each delete of the repair is sent `mutations_sync = 2` there (the same wait),
    and the copy is repaired all the same."""
    from tests.storage.clickhouse.test_rollup_retention import Recording, before_24_4

    store = chdb_session.store("copies_24_3")
    own = store.client
    try:
        row = MINE[300]
        with written_ago(2):
            assert write_spans(store, [row]) == 1
        with written_ago(1), pytest.MonkeyPatch.context() as patch:
            patch.setattr(writes, "stored_starts", lambda store, batch: {})
            raced = dict(row, total_cost_usd=row["total_cost_usd"] + 1.0)
            assert write_spans(store, [raced]) == 1
        store.client = recording = Recording(own, before_24_4(own))
        (month,) = repair_copies.store_months(store)
        result = repair_copies.repair_month(store, A, month)
        store.client = own
        assert (result.spans, result.copies) == (1, 1)
        deletes = recording.deletes()
        assert deletes and all(s.get("mutations_sync") == 2 for _, s in deletes), deletes
        assert not any("lightweight_deletes_sync" in s for _, s in deletes)
        ((copies, cost),) = own.query(
            f"SELECT count(), any(total_cost_usd) FROM {store.table('spans')}"
        ).result_rows
        assert (copies, cost) == (1, raced["total_cost_usd"])
    finally:
        store.client = own
        chdb_session.drop(store)
