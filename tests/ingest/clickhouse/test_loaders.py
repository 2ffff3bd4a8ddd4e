"""The demo loader (`make run`'s first-run data) and file import into the ClickHouse span
store. The demo: every span
once, each org's counts and totals in the spans, the trace totals and the rollups as polars
finds them on the generated rows; the declared dimension's slot and the retention days
stamped on write, and spans already past their retention neither stored nor counted. Import:
a row the store cannot hold is refused alone and named, the rest stored, a second import adds
nothing."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest
from sqlalchemy import select, update

from observatory_core.demo.generator import DemoGenerator
from observatory_core.demo.load import LoadReport, ensure_demo_tenants, load_demo
from observatory_core.ingest import to_clickhouse
from observatory_core.ingest.importer import import_file
from observatory_core.ingest.pricing import PriceBook
from observatory_core.ingest.spanrows import complete_row
from observatory_core.rollups.dimensions import declare
from observatory_core.runtime import bootstrap
from observatory_core.storage.clickhouse.writes import written_extent
from observatory_core.storage.schema import org_dimensions, orgs, projects
from tests.helpers import admin_scope, make_org
from tests.ingest.clickhouse.conftest import ChIngest

END = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
SPANS, DAYS, SEED = 2000, 3, 5


@dataclass
class Loaded:
    ch: ChIngest
    report: LoadReport
    again: LoadReport
    sent: pl.DataFrame  # the generated rows to be kept (not past their retention)
    org1: int
    project1: int
    org2: int
    slot: str  # org 2's slot for tag:customer
    before: tuple[int, datetime | None]  # the store's spans before the load, and the newest

    @property
    def orgs(self) -> str:
        """The demo orgs, for a WHERE clause (the package's other tests use other orgs)."""
        return ", ".join(str(o) for o in sorted(set(self.sent["org_id"])))


@pytest.fixture(scope="module")
def loaded(ch_ingest) -> Loaded:
    """The demo loaded once (and a second time), with org 1 keeping spans 10 years but its
    first project 7 days (past for every demo span: none stored), and the tag key `customer`
    declared as a dimension of org 2."""
    engine = ch_ingest.engine
    ids = ensure_demo_tenants(engine)
    (org1, project1), (org2, _) = min(ids.values()), max(ids.values())
    with engine.begin() as conn:
        conn.execute(update(orgs).where(orgs.c.id == org1).values(span_retention_days=3650))
        conn.execute(
            update(projects).where(projects.c.id == project1).values(span_retention_days=7)
        )
    declare(engine, admin_scope(org2), "tag:customer")
    to_clickhouse.forget_settings()  # ingest reads the orgs' settings at most once a minute
    with engine.connect() as conn:
        slot = conn.execute(
            select(org_dimensions.c.slot).where(org_dimensions.c.org_id == org2)
        ).scalar_one()
        prices = PriceBook.load(conn)
    before = written_extent(ch_ingest.store)
    report = load_demo(engine, spans=SPANS, days=DAYS, seed=SEED, end=END)
    generator = DemoGenerator(ids=ids, end=END, days=DAYS, seed=SEED, prices=prices)
    sent = pl.DataFrame(
        [complete_row(r, 16_000) for r in generator.spans(SPANS)], infer_schema_length=None
    )
    again = load_demo(engine, spans=SPANS, days=DAYS, seed=SEED, end=END)  # a second run
    assert sent["start_time"].max() < datetime.now(UTC) - timedelta(days=7)
    expired = sent.filter(pl.col("project_id") == project1)
    assert expired.height > 100
    sent = sent.filter(pl.col("project_id") != project1)
    return Loaded(ch_ingest, report, again, sent, org1, project1, org2, slot, before)


def _per_org(frame: pl.DataFrame) -> pl.DataFrame:
    return (
        frame.group_by("org_id")
        .agg(
            pl.len().alias("spans"),
            pl.col("total_tokens").sum().cast(pl.Int64).alias("tokens"),
            pl.col("total_cost_usd").sum().round(6).alias("cost"),
        )
        .sort("org_id")
    )


def test_every_generated_span_is_stored_once(loaded):
    sent = loaded.sent
    assert loaded.report.spans == sent.height and loaded.again.spans == 0
    stored = loaded.ch.frame(
        "SELECT org_id, total_tokens, total_cost_usd FROM {db}.spans "
        f"WHERE org_id IN ({loaded.orgs})"
    )
    assert stored.height == sent.height
    assert _per_org(stored).equals(_per_org(sent))


def test_the_first_run_check_reads_the_span_store(loaded):
    """`make run` loads the demo when no span is stored, and tops it up when it lags: both
    read the span store (DATABASE_URL's spans table is empty)."""
    engine, (count, newest) = loaded.ch.engine, loaded.before
    assert bootstrap.span_count(engine) == count + loaded.sent.height
    now = datetime.now(UTC)
    newest = max(filter(None, (newest, loaded.sent["start_time"].max())))
    gap = bootstrap.demo_gap(engine, now)
    assert gap == (now - newest if now - newest >= timedelta(hours=1) else None)


def test_trace_totals_and_rollups_hold_each_orgs_spans(loaded):
    ch, sent, mine = loaded.ch, loaded.sent, f"WHERE org_id IN ({loaded.orgs})"
    expected = _per_org(sent)
    totals = ch.frame(
        "SELECT org_id, toUInt64(sum(span_count)) AS spans, sum(total_tokens) AS tokens, "
        f"round(sum(total_cost_usd), 6) AS cost FROM {{db}}.trace_totals {mine} GROUP BY org_id"
    )
    assert totals.sort("org_id").to_dicts() == expected.to_dicts()
    traces = sent.group_by("org_id").agg(pl.col("trace_id").n_unique().alias("traces"))
    stored_traces = ch.frame(
        "SELECT org_id, uniqExact(trace_id) AS traces FROM {db}.trace_totals "
        f"{mine} GROUP BY org_id"
    )
    assert stored_traces.sort("org_id").to_dicts() == traces.sort("org_id").to_dicts()
    for grain in ("1min", "1day"):
        rollup = ch.frame(
            "SELECT org_id, toUInt64(sum(span_count)) AS spans, "
            "toInt64(sum(total_tokens_sum)) AS tokens, round(sum(total_cost_sum), 6) AS cost "
            f"FROM {{db}}.rollup_{grain} {mine} GROUP BY org_id ORDER BY org_id"
        )
        assert rollup.to_dicts() == expected.to_dicts(), grain


def test_the_declared_tag_fills_its_slot_in_spans_and_rollups(loaded):
    ch, org2, slot = loaded.ch, loaded.org2, loaded.slot

    def customer(tags) -> str:
        found = [t.split(":", 1)[1] for t in tags if t.startswith("customer:")]
        return "=" + found[0] if found else ""

    mine = loaded.sent.filter(pl.col("org_id") == org2).with_columns(
        pl.col("tags").map_elements(customer, return_dtype=pl.String).alias("slot")
    )
    expected = mine.group_by("slot").agg(pl.len().alias("spans")).sort("slot")
    assert expected.height > 2  # several customers, and spans without one
    stored = ch.frame(
        f"SELECT ifNull({slot}, '') AS slot, toUInt32(count()) AS spans FROM {{db}}.spans "
        f"WHERE org_id = {org2} GROUP BY slot ORDER BY slot"
    )
    rollup = ch.frame(
        f"SELECT {slot} AS slot, toUInt32(sum(span_count)) AS spans FROM {{db}}.rollup_1hour "
        f"WHERE org_id = {org2} GROUP BY slot ORDER BY slot"
    )
    assert stored.to_dicts() == expected.to_dicts() == rollup.to_dicts()
    others = ch.frame(
        f"SELECT count() AS n FROM {{db}}.spans WHERE {slot} IS NOT NULL AND org_id != {org2}"
    )
    assert others["n"][0] == 0


def test_retention_days_are_stamped_from_the_org_and_project_settings(loaded):
    stamped = loaded.ch.frame(
        "SELECT org_id, project_id, any(retain_days) AS days, uniqExact(retain_days) AS kinds "
        f"FROM {{db}}.spans WHERE org_id IN ({loaded.orgs}) GROUP BY org_id, project_id"
    )
    assert (stamped["kinds"] == 1).all()
    expected = {
        (o, p): 3650 if o == loaded.org1 else 0
        for o, p in loaded.sent.select("org_id", "project_id").unique().iter_rows()
    }
    assert {(o, p): d for o, p, d, _ in stamped.iter_rows()} == expected


def _export_rows(count: int) -> list[dict]:
    start = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
    rows = []
    for i in range(count):
        at = start + timedelta(seconds=37 * i)
        rows.append(
            {
                "trace_id": f"{i // 3 + 1:032x}",
                "span_id": f"{i + 1:016x}",
                "name": "chat \x00 nul" if i == 1 else f"chat {i}",
                "operation": "chat",
                "model": "gpt-4o-mini",
                "start_time": at.isoformat(),
                "end_time": (at + timedelta(milliseconds=250 + i)).isoformat(),
                "input_tokens": 2**40 if i == 3 else 10 + i,
                "output_tokens": 2 + i % 5,
                "total_cost_usd": 0.001 * i,
            }
        )
    return rows


def test_import_stores_every_row_but_the_one_the_store_refuses(ch_ingest, tmp_path):
    org_id, _ = make_org(ch_ingest.engine, "importer", ("default",))
    rows = _export_rows(4)
    path = tmp_path / "spans.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    report = import_file(ch_ingest.engine, org_id, path)
    assert (report.read, report.stored, report.rejected) == (4, 3, 1)
    assert "chat 3" in report.reasons[0] and "the database refused it" in report.reasons[0]
    assert import_file(ch_ingest.engine, org_id, path).stored == 0
    good = pl.DataFrame([r for r in rows if r["input_tokens"] < 2**31])
    stored = ch_ingest.frame(
        f"SELECT name, input_tokens FROM {{db}}.spans WHERE org_id = {org_id} ORDER BY name"
    )
    expected = good.select(
        pl.col("name").str.replace_all("\x00", "\ufffd", literal=True), "input_tokens"
    ).sort("name")
    assert stored.to_dicts() == expected.to_dicts()
    rollup = ch_ingest.frame(
        "SELECT toInt64(sum(span_count)) AS spans, toInt64(sum(input_tokens_sum)) AS tokens "
        f"FROM {{db}}.rollup_1hour WHERE org_id = {org_id}"
    )
    assert rollup.row(0) == (good.height, good["input_tokens"].sum())
