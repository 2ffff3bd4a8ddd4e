"""The Traces list grouped by the reader's local day (`traces/days.py`): each day's rows, cost,
errors and p95 latency against polars over the raw rows (`convert_time_zone`, then truncate to
the day) in UTC, New York across its November clock change (a 25-hour day) and Kathmandu
(+05:45), in both list modes, on SQLite, PostgreSQL and the span store (chDB); and the days add up to the list they summarise."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
import pytest
from sqlalchemy import update

from observatory_core.accounts.permissions import Role
from observatory_core.base.errors import UserError
from observatory_core.base.zones import Zone
from observatory_core.filters.spec import FilterSpec
from observatory_core.storage.schema import spans
from observatory_core.traces.days import day_spec, list_days
from observatory_core.traces.query import list_spans
from tests.chdb_store import copy_into_span_store, with_store_ids
from tests.helpers import admin_scope, all_spans, make_org, span, write
from tests.traces.conftest import EXPLORER_STORES, _database, build_rows

ZONES = ["UTC", "America/New_York", "Asia/Kathmandu"]
AUTUMN = datetime(2026, 11, 1, 6, tzinfo=UTC)  # New York: 2 am EDT -> 1 am EST
NOW = datetime(2026, 11, 20, 12, tzinfo=UTC)
START = AUTUMN - timedelta(days=2, hours=5, minutes=13)  # ragged: not on any zone's midnight
END = AUTUMN + timedelta(days=2, hours=3, minutes=31)
SPEC = FilterSpec(relative=None, start=START, end=END)


@pytest.fixture(scope="module", params=EXPLORER_STORES)
def days_data(request, tmp_path_factory):
    """~250 traces around the change, spans on (and a microsecond before) each zone's local
    midnights, a few duplicates set aside, and another org's traces that must not show; on
    chdb, the same rows copied into the span store (`migrate-spans`)."""
    engine = _database(request, tmp_path_factory, request.param)
    acme, projects = make_org(engine, "acme", projects=("bot", "search"))
    globex, other = make_org(engine, "globex")
    rows = build_rows(acme, projects, seed=7, traces=250, now=END + timedelta(hours=6), days=5)
    for zone in map(Zone, ZONES):
        for delta in (-1, 0, 1):
            midnight = zone.midnight(zone.local(AUTUMN).date() + timedelta(days=delta))
            for t in (midnight, midnight - timedelta(microseconds=1)):
                rows.append(span(acme, projects[0], t, duration_ms=250.0, status="error"))
    rows += build_rows(globex, other, seed=8, traces=40, now=END, days=4)
    write(engine, rows)
    with engine.begin() as conn:  # set aside as twins: listed, but counted in no figure
        conn.execute(
            update(spans)
            .where(spans.c.org_id == acme, spans.c.id % 17 == 0, spans.c.parent_span_id.isnot(None))
            .values(duplicate_of="0" * 16)
        )
    df = all_spans(engine)
    assert df["duplicate_of"].is_not_null().sum() > 5  # the twins are there to be left out
    if request.param != "chdb":
        yield {"engine": engine, "acme": acme, "df": df}
        return
    session = request.getfixturevalue("chdb_session")
    store = copy_into_span_store(session, engine, "days")
    engine.dispose()
    yield {"engine": store.engine, "acme": acme, "df": with_store_ids(df, store)}
    session.drop(store)


def _reference(df: pl.DataFrame, org: int, mode: str, zone: str, model: str | None = None):
    """The list's rows by local day, from the raw rows alone."""
    df = df.with_columns(
        pl.col("start_time").dt.convert_time_zone("UTC"),
        pl.col("end_time").dt.convert_time_zone("UTC"),
    ).filter(pl.col("org_id") == org)
    matching = df.filter((pl.col("start_time") >= START) & (pl.col("start_time") < END))
    if model:
        matching = matching.filter(pl.col("model") == model)
    if mode == "spans":
        listed = matching.select(
            "start_time",
            ms=pl.col("duration_ms").cast(pl.Float64),
            cost=pl.col("total_cost_usd"),
            errors=(pl.col("status") == "error").cast(pl.Int64),
        )
    else:
        trees = df.filter(pl.col("trace_id").is_in(matching["trace_id"].implode()))
        counted = pl.col("duplicate_of").is_null()
        totals = trees.group_by("trace_id").agg(
            cost=pl.col("total_cost_usd").filter(counted).sum(),
            errors=((pl.col("status") == "error") & counted).sum().cast(pl.Int64),
            ms=(pl.col("end_time").max() - pl.col("start_time").min()).dt.total_microseconds()
            / 1000.0,
        )
        roots = trees.filter(pl.col("parent_span_id").is_null()).select("trace_id", "start_time")
        listed = roots.join(totals, on="trace_id")
    return (
        listed.with_columns(
            day=pl.col("start_time").dt.convert_time_zone(zone).dt.truncate("1d").dt.date()
        )
        .group_by("day")
        .agg(
            rows=pl.len(),
            error_count=pl.col("errors").sum(),
            total_cost_usd=pl.col("cost").sum(),
            p95_duration_ms=pl.col("ms").quantile(0.95, "linear"),
        )
        .sort("day", descending=True)
    )


def _check(got, ref: pl.DataFrame) -> None:
    assert [d["day"] for d in got.days] == ref["day"].to_list()
    for d, r in zip(got.days, ref.iter_rows(named=True), strict=True):
        assert (d["rows"], d["error_count"]) == (r["rows"], r["error_count"]), d["day"]
        assert d["total_cost_usd"] == pytest.approx(r["total_cost_usd"], rel=1e-9, abs=1e-12)
        assert d["p95_duration_ms"] == pytest.approx(r["p95_duration_ms"], rel=1e-9)


@pytest.mark.parametrize("mode", ["spans", "traces"])
@pytest.mark.parametrize("zone", ZONES)
def test_days_match_polars(days_data, zone, mode):
    d = days_data
    got = list_days(d["engine"], admin_scope(d["acme"]), SPEC, mode=mode, zone=Zone(zone), now=NOW)
    _check(got, _reference(d["df"], d["acme"], mode, zone))
    z = Zone(zone)
    for day in got.days:  # each row is that local day, from its midnight to the next
        assert day["start"] == z.midnight(day["day"])
        assert day["end"] == z.midnight(day["day"] + timedelta(days=1))
    if zone == "America/New_York":  # the day the clocks went back is 25 hours long
        (fall,) = [x for x in got.days if x["day"] == AUTUMN.date()]
        assert fall["end"] - fall["start"] == timedelta(hours=25)


@pytest.mark.parametrize("mode", ["spans", "traces"])
def test_days_add_up_to_the_list(days_data, mode):
    """Every row of the list, paged through, falls on a day of the summary with the same
    figures: the summary and the list are one question."""
    d, zone = days_data, Zone("America/New_York")
    scope = admin_scope(d["acme"])
    got = list_days(d["engine"], scope, SPEC, mode=mode, zone=zone, now=NOW)
    fields = ["start_time", "duration_ms", "total_cost_usd"]
    page = list_spans(
        d["engine"], scope, SPEC, mode=mode, limit=1000, fields=fields, count=True, now=NOW
    )
    assert page.next_cursor is None and got.total == page.total == len(page.rows)
    listed = pl.DataFrame(page.rows, infer_schema_length=None).with_columns(
        day=pl.col("start_time").dt.convert_time_zone(zone.name).dt.date()
    )
    per_day = listed.group_by("day").agg(pl.len(), pl.col("total_cost_usd").sum()).sort("day")
    by_day = {x["day"]: x for x in got.days}
    for day, n, cost in per_day.iter_rows():
        assert by_day[day]["rows"] == n
        if mode == "traces":  # a trace row carries its tree's cost, as the summary does
            assert by_day[day]["total_cost_usd"] == pytest.approx(cost, rel=1e-9)


def test_a_day_narrows_the_list_to_that_day(days_data):
    d, zone = days_data, Zone("Asia/Kathmandu")
    scope = admin_scope(d["acme"])
    spec = SPEC.replace(models=("gpt-4o",))
    got = list_days(d["engine"], scope, spec, zone=zone, now=NOW)
    _check(got, _reference(d["df"], d["acme"], "spans", zone.name, model="gpt-4o"))
    for day in (got.days[0], got.days[-1], got.days[len(got.days) // 2]):  # first, last: cut
        narrowed = day_spec(spec, day["start"], day["end"], NOW)
        assert narrowed.start >= START and narrowed.end <= END
        listed = list_spans(d["engine"], scope, narrowed, limit=1000, count=True, now=NOW)
        assert listed.total == day["rows"]


def test_viewers_see_no_cost_and_bad_modes_are_refused(days_data):
    d = days_data
    viewer = admin_scope(d["acme"], Role.VIEWER)
    got = list_days(d["engine"], viewer, SPEC, mode="traces", now=NOW)
    assert got.days and not got.costs_shown
    assert all("total_cost_usd" not in day for day in got.days)
    with pytest.raises(UserError, match="'spans' or 'traces'"):
        list_days(d["engine"], viewer, SPEC, mode="sessions", now=NOW)
    empty = FilterSpec(
        relative=None, start=NOW + timedelta(days=400), end=NOW + timedelta(days=401)
    )
    assert list_days(d["engine"], viewer, empty, now=NOW).days == []
