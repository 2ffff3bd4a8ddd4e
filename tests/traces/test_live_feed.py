"""The live feed's spans against polars over the raw rows, on SQLite, PostgreSQL and the span
store: the spans started since `since`, newest first, each once, the org's only, under the
sidebar's filter; on the span store a racing writer's later copy listed once, as it says; the
alerts and export jobs read from DATABASE_URL while the spans come from the span store."""

from __future__ import annotations

from datetime import timedelta

import polars as pl
import pytest
from sqlalchemy import delete

from observatory_core.accounts.permissions import Role
from observatory_core.exports.jobs import create_export
from observatory_core.filters.spec import FilterSpec
from observatory_core.reports.live import live_feed
from observatory_core.storage.engine import get_engine
from observatory_core.storage.migrate import upgrade
from observatory_core.storage.schema import export_jobs
from tests.chdb_store import write_later_copy
from tests.helpers import admin_scope, make_org, span
from tests.reference import reference_ids
from tests.traces.conftest import NOW, globex_project

SINCE = NOW - timedelta(days=1)
EVERY = FilterSpec()


@pytest.fixture(scope="module")
def database(explorer, tmp_path_factory):
    """DATABASE_URL's engine (alerts, export jobs): the explorer's own, or on the span store a
    migrated SQLite database of the module's."""
    if explorer["store"] != "chdb":
        yield explorer["engine"]
        return
    engine = get_engine(f"sqlite:///{tmp_path_factory.mktemp('live') / 'app.db'}")
    upgrade(engine)
    assert make_org(engine, "acme", projects=("bot", "search"))[0] == explorer["acme"]
    assert make_org(engine, "globex")[0] == explorer["globex"]
    yield engine
    engine.dispose()


def _feed(explorer, database, org, spec=EVERY, since=SINCE, **kw):
    scope = kw.pop("scope", None) or admin_scope(org)
    return live_feed(database, scope, spec, since=since, now=NOW, spans=explorer["engine"], **kw)


def _newest_first(explorer, org, spec: FilterSpec) -> pl.DataFrame:
    window = spec.replace(relative=None, start=SINCE, end=NOW)
    ids = reference_ids(explorer["df"], window, NOW, org)
    rows = explorer["df"].filter(pl.col("id").is_in(list(ids)))
    return rows.sort("start_time", descending=True)


@pytest.mark.parametrize(
    "spec",
    [FilterSpec(), FilterSpec(statuses=("ok",), models=("gpt-4o", "claude-sonnet-4-5"))],
    ids=["all", "ok-two-models"],
)
def test_the_spans_since_are_listed_newest_first_once(explorer, database, spec):
    for org in (explorer["acme"], explorer["globex"]):
        want = _newest_first(explorer, org, spec)
        assert 0 < want.height <= 50
        feed = _feed(explorer, database, org, spec)
        assert "spans" in feed.shown
        ids = [r["id"] for r in feed.spans]
        assert len(ids) == len(set(ids)) and set(ids) == set(want["id"])
        times = [r["start_time"] for r in feed.spans]
        assert times == sorted(times, reverse=True) and min(times) >= SINCE


def test_a_short_feed_holds_the_newest_spans(explorer, database):
    org = explorer["acme"]
    want = _newest_first(explorer, org, FilterSpec())
    feed = _feed(explorer, database, org, limit=5)
    assert [r["start_time"] for r in feed.spans] == want["start_time"].head(5).to_list()


def test_a_viewers_feed_has_no_cost(explorer, database):
    viewer = admin_scope(explorer["acme"], Role.VIEWER)
    feed = _feed(explorer, database, None, scope=viewer)
    assert feed.spans and "total_cost_usd" not in feed.span_fields
    assert all("total_cost_usd" not in r for r in feed.spans)


def test_a_later_copy_of_a_span_is_listed_once_as_it_says(explorer, database):
    """A racing writer's later copy turned a new call into an error of another model: the
    feed lists the span once, as the newest copy, and a filter on the older copy's values no
    longer finds it; another org never sees it."""
    if explorer["store"] != "chdb":
        pytest.skip("only the span store keeps copies of a span")
    globex, project = globex_project(explorer)
    call = span(globex, project, NOW - timedelta(minutes=5), model="gpt-4o")
    explorer["write"]([call])
    try:
        later = {**call, "status": "error", "model": "gemini-2.5-flash"}
        write_later_copy(explorer["span_store"], [later])
        since = NOW - timedelta(minutes=15)
        (row,) = _feed(explorer, database, globex, since=since).spans
        assert (row["trace_id"], row["status"], row["model"]) == (
            call["trace_id"],
            "error",
            "gemini-2.5-flash",
        )
        older = FilterSpec(models=("gpt-4o",))
        assert _feed(explorer, database, globex, older, since=since).spans == []
        assert _feed(explorer, database, explorer["acme"], since=since).spans == []
    finally:
        explorer["remove"]([call["trace_id"]])


def test_export_jobs_are_read_from_database_url(explorer, database):
    """The feed's other parts read `engine` (DATABASE_URL's) whatever the spans' store: an
    export job made there half an hour ago is in its org's feed, and in no other's."""
    job = create_export(
        database,
        admin_scope(explorer["acme"]),
        FilterSpec(relative="7d"),
        now=NOW - timedelta(minutes=30),
    )
    try:
        feed = _feed(explorer, database, explorer["acme"])
        assert {"spans", "alerts", "exports"} <= feed.shown and feed.spans
        assert [(c["job"], c["change"]) for c in feed.export_changes] == [(job["id"], "created")]
        assert _feed(explorer, database, explorer["globex"]).export_changes == []
    finally:
        with database.begin() as conn:
            conn.execute(delete(export_jobs).where(export_jobs.c.id == job["id"]))
