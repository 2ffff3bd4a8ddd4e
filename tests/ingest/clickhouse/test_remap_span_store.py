"""`remap` on the ClickHouse span store: spans stored before the mapping knew Traceloop's and
OpenInference's names (over two days and two projects, a wrapper above a call that only remap
reveals, a span whose stored flag is wrong) remapped on chDB; the stored fields, the flags, every
rollup grain, the trace totals and the metrics figures against polars over the raw rows and
against SQLite and PostgreSQL given the same rows and the same remap. One row per span after it,
a second run changes nothing, and a run stopped between a batch's insert and its rebuild is
settled by the next run."""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from observatory_core.base.settings import get_settings
from observatory_core.filters.spec import FilterSpec
from observatory_core.ingest import persist
from observatory_core.ingest.remap import RemapReport, count_spans, remap
from observatory_core.metrics.engine import run_metrics
from observatory_core.metrics.query import MetricQuery
from observatory_core.storage.clickhouse import rewrite_spans
from observatory_core.storage.clickhouse.layout import micro_text
from tests.helpers import admin_scope, all_spans, child_of, make_org, span
from tests.ingest.clickhouse.test_late_llm_calls import (
    GRAINS,
    KEYS,
    _grain_as_polars,
    _polars_rollup,
    _store_rollup,
    _trace_totals_as_polars,
)
from tests.ingest.test_remap import NOW, _as_stored_before, _price
from tests.reference import reference_llm_calls

FIELDS = ["operation", "model", "user_id", "session_id", "cost_source", "llm_call"]
FIELDS += ["input_tokens", "output_tokens", "total_tokens"]
WINDOW = (NOW - timedelta(days=3), NOW + timedelta(hours=1))


def _rows(org: int, main: int, side: int) -> list[dict]:
    """Spans as ingest stored them before it knew these names, across a midnight and two
    projects; a wrapper (`other`, a model and tokens) counted as an LLM call because the span
    below it was not known to be one; a tool span the test flags wrongly after the write."""
    rows = [
        _as_stored_before(org, main if i % 3 else side, NOW - timedelta(hours=5 * i, minutes=i), i)
        for i in range(10)
    ]
    wrapper = span(
        org,
        main,
        NOW - timedelta(hours=1),
        operation="other",
        name="pipeline",
        provider="openai",
        model="gpt-4o",
        input_tokens=100,
        output_tokens=20,
        duration_ms=900.0,
    )
    below = _as_stored_before(org, main, NOW - timedelta(hours=1) + timedelta(seconds=1), 40)
    below = dict(below, trace_id=wrapper["trace_id"], parent_span_id=wrapper["span_id"])
    tool = child_of(wrapper, NOW - timedelta(minutes=59), operation="tool", name="search")
    plain = span(org, side, NOW - timedelta(hours=30), model="gpt-4o", provider="openai",
                 input_tokens=7, output_tokens=3, duration_ms=80.0)  # fmt: skip
    return [*rows, wrapper, below, tool, plain]


def _reference(df: pl.DataFrame) -> pl.DataFrame:
    """The rows with `llm_call` by the rule (tests/reference.py), an `id` per row."""
    df = df.drop("id", strict=False).with_row_index("id")
    calls = reference_llm_calls(df)
    return df.with_columns(pl.col("id").is_in(sorted(calls)).alias("llm_call_ref"))


def _stored(store, org: int) -> pl.DataFrame:
    columns = ["trace_id", "span_id", "parent_span_id", "start_time", "project_id", *FIELDS]
    columns += ["total_cost_usd", "duration_ms", "metadata", "org_id"]
    result = store.client.query(
        f"SELECT {', '.join(columns)} FROM {store.table('spans')} WHERE org_id = %(org)s",
        parameters={"org": org},
    )
    rows = [dict(zip(result.column_names, r, strict=True)) for r in result.result_rows]
    for row in rows:
        row["metadata"] = json.loads(row["metadata"]) if row["metadata"] else None
    return pl.DataFrame(rows, infer_schema_length=None).with_columns(
        pl.col("start_time").dt.replace_time_zone("UTC")
    )


def _figures(engine, org: int, force: str) -> list[dict]:
    query = MetricQuery(
        series=("request_count.count", "total_tokens.sum", "total_cost.sum", "span_count.count"),
        filters=FilterSpec(relative=None, start=WINDOW[0], end=WINDOW[1]),
        bucket=None,
        group_by=("model", "operation"),
    )
    result = run_metrics(engine, admin_scope(org), query, now=WINDOW[1], force=force)
    return result.frame.sort("model", "operation").to_dicts()


def _flag_tool_wrongly(store, org: int) -> None:
    """As if stored before the rule: the tool span flagged as an LLM call (the rollups keep it
    as it was counted)."""
    store.client.command(
        f"ALTER TABLE {store.table('spans')} UPDATE llm_call = true "
        "WHERE org_id = %(org)s AND name = 'search'",
        parameters={"org": org},
        settings={"mutations_sync": 2},
    )


@dataclass
class Remapped:
    store: object
    org: int
    other: int
    report: RemapReport
    before_other: dict[str, pl.DataFrame]
    sent: list[dict]


_RUNS = itertools.count(1)


@pytest.fixture(scope="module")
def remapped(ch_ingest) -> Remapped:
    """Orgs of their own each set-up: the package's store keeps what an earlier set-up wrote,
    and a run of chosen files set this fixture up twice (its org's spans counted twice)."""
    engine, store = ch_ingest.engine, ch_ingest.store
    run = next(_RUNS)
    org, (main, side) = make_org(engine, f"remap-ch-{run}", ("main", "side"))
    other, (theirs,) = make_org(engine, f"remap-ch-other-{run}")
    sent = _rows(org, main, side)
    assert persist.write_spans(engine, sent) == len(sent)
    persist.write_spans(engine, [_as_stored_before(other, theirs, NOW - timedelta(hours=2), 7)])
    _flag_tool_wrongly(store, org)
    before_other = {t: _store_rollup(store, t, other) for t in GRAINS}
    assert count_spans(engine, org_id=org, since=None) == len(sent)
    report = remap(engine, org_id=org, batch=4)  # pages of 4: many pages, days and flushes
    return Remapped(store, org, other, report, before_other, sent)


def test_the_report_and_one_row_per_span(remapped):
    assert (remapped.report.scanned, remapped.report.changed) == (14, 11)
    assert remapped.report.orgs_rebuilt == 1
    df = _stored(remapped.store, remapped.org)
    assert df.height == len(remapped.sent)  # no copy left
    assert df.select("trace_id", "span_id").n_unique() == df.height


def test_the_fields_are_derived(remapped):
    df = _stored(remapped.store, remapped.org)
    learned = df.filter(pl.col("model") == "gpt-4o-mini")  # from the invocation parameters
    assert learned.height == 11
    assert learned["operation"].unique().to_list() == ["chat"]
    assert learned["cost_source"].unique().to_list() == ["computed"]
    assert learned["total_cost_usd"].to_list() == pytest.approx([_price(100, 20)] * 11)
    assert sorted(learned["user_id"].unique().to_list()) == ["u-0", "u-1", "u-2"]
    assert all(m == {"customer": "acme-corp"} for m in learned["metadata"].to_list())
    assert df.filter(pl.col("operation") == "other").height == 1  # the wrapper alone


def test_the_flags_follow_the_rule(remapped):
    df = _reference(_stored(remapped.store, remapped.org))
    assert df["llm_call"].to_list() == df["llm_call_ref"].to_list()
    wrapper = df.filter(pl.col("model") == "gpt-4o", pl.col("operation") == "other")
    assert wrapper["llm_call"].to_list() == [False]  # its call below was revealed by remap
    assert df.filter(pl.col("operation") == "tool")["llm_call"].to_list() == [False]


@pytest.mark.parametrize("table", list(GRAINS))
def test_every_grain_equals_polars_over_the_stored_rows(remapped, table):
    store, org = remapped.store, remapped.org
    ref = _reference(_stored(store, org)).with_columns(pl.col("llm_call_ref").alias("llm_call"))
    _grain_as_polars(store, table, org, ref)
    # the other org's rows untouched
    assert _store_rollup(store, table, remapped.other).to_dicts() == (
        remapped.before_other[table].to_dicts()
    )


def test_the_trace_totals_equal_polars(remapped):
    _trace_totals_as_polars(remapped.store, remapped.org, _stored(remapped.store, remapped.org))


def test_the_other_org_is_untouched(remapped):
    df = _stored(remapped.store, remapped.other)
    assert df["operation"].to_list() == ["other"]
    assert df["model"].to_list() == [None]


@pytest.fixture
def reference_store(engine, monkeypatch, remapped):
    """The same rows written to SQLite or PostgreSQL, flagged and remapped the same way, with
    the span store set aside: (engine, org)."""
    from sqlalchemy import update

    from observatory_core.storage.schema import spans as spans_table

    monkeypatch.delenv("OBSERVATORY_SPAN_STORE")
    get_settings.cache_clear()
    org, (main, side) = make_org(engine, "remap-ch", ("main", "side"))
    ids = {}
    for r in remapped.sent:
        ids.setdefault(r["project_id"], main if not ids else side)
    rows = [dict(r, org_id=org, project_id=ids[r["project_id"]]) for r in remapped.sent]
    persist.write_spans(engine, rows)
    with engine.begin() as conn:
        conn.execute(
            update(spans_table).where(spans_table.c.name == "search").values(llm_call=True)
        )
    report = remap(engine, org_id=org, batch=4)
    assert (report.scanned, report.changed) == (remapped.report.scanned, remapped.report.changed)
    yield engine, org
    monkeypatch.undo()
    get_settings.cache_clear()


def test_the_same_answers_as_sqlite_and_postgresql(remapped, reference_store):
    engine, org = reference_store
    there = all_spans(engine).filter(pl.col("org_id") == org)
    here = _stored(remapped.store, remapped.org)
    key = ["trace_id", "span_id"]
    columns = [*key, *FIELDS, "total_cost_usd", "metadata"]
    a = here.select(columns).sort(key).to_dicts()
    b = there.select(columns).sort(key).to_dicts()
    for x, y in zip(a, b, strict=True):
        assert x["total_cost_usd"] == pytest.approx(y["total_cost_usd"])
        assert {k: v for k, v in x.items() if k != "total_cost_usd"} == {
            k: v for k, v in y.items() if k != "total_cost_usd"
        }
    for force in ("rollup", "raw"):
        got = _figures(remapped.store.engine, remapped.org, force)
        want = _figures(engine, org, force)
        assert [dict(r, **{"total_cost.sum": 0}) for r in got] == [
            dict(r, **{"total_cost.sum": 0}) for r in want
        ], force
        assert [r["total_cost.sum"] for r in got] == pytest.approx(
            [r["total_cost.sum"] for r in want]
        )
    # and against polars over the stored rows: requests, tokens and cost per model
    ref = _reference(here).filter(pl.col("llm_call_ref"))
    want = (
        ref.group_by("model", "operation")
        .agg(
            pl.len().alias("n"),
            pl.col("total_tokens").sum().alias("k"),
            pl.col("total_cost_usd").sum().alias("c"),
        )
        .sort("model", "operation")
        .to_dicts()
    )
    for force in ("rollup", "raw"):
        got = [
            {"model": r["model"], "operation": r["operation"], "n": r["request_count.count"],
             "k": r["total_tokens.sum"], "c": r["total_cost.sum"]}
            for r in _figures(remapped.store.engine, remapped.org, force)
            if r["request_count.count"]
        ]  # fmt: skip
        assert [dict(r, c=0) for r in got] == [dict(r, c=0) for r in want], force
        assert [r["c"] for r in got] == pytest.approx([r["c"] for r in want]), force


def test_a_second_run_changes_nothing(ch_ingest, remapped):
    store, org = remapped.store, remapped.org
    before = {t: _store_rollup(store, t, org) for t in GRAINS}
    again = remap(ch_ingest.engine, org_id=org)
    assert again.changed == 0
    for table in GRAINS:
        after = _store_rollup(store, table, org)
        assert after.drop("cost").to_dicts() == before[table].drop("cost").to_dicts()


def test_a_stopped_run_is_settled_by_the_next(ch_ingest, monkeypatch):
    """The first run stops after inserting a batch's new copies, before their days are
    rebuilt: the rollups then count those spans twice and the spans hold two rows each. The
    next run finds the copies, rebuilds their days and traces and deletes the older rows."""
    engine, store = ch_ingest.engine, ch_ingest.store
    org, (main, side) = make_org(engine, "remap-ch-stopped", ("main", "side"))
    sent = _rows(org, main, side)
    persist.write_spans(engine, sent)

    def stop(*_a, **_k):
        raise KeyboardInterrupt

    monkeypatch.setattr(rewrite_spans, "rebuild_days", stop)
    # the engine's own merges would fold a span's two rows (same sorting key) before they are
    # counted: held while the stopped run leaves them (a flake under load, `14 > 14`)
    table = store.table("spans")
    store.client.command(f"SYSTEM STOP MERGES {table}")
    try:
        with pytest.raises(KeyboardInterrupt):
            remap(engine, org_id=org, batch=20)
        monkeypatch.undo()
        get_settings.cache_clear()
        monkeypatch.setenv("OBSERVATORY_SPAN_STORE", get_settings().span_store or "")
        doubled = _store_rollup(store, "rollup_1day", org)
        assert doubled["spans"].sum() > len(sent)  # the views counted the new copies too
        assert _stored(store, org).height > len(sent)
    finally:
        store.client.command(f"SYSTEM START MERGES {table}")
    seen = _recorded(monkeypatch, store)
    remap(engine, org_id=org)
    monkeypatch.undo()
    ((_, _, found),) = [s for s in seen if "arrayFilter(c -> c.1 < newest" in s[0]]
    starts = sorted(rewrite_spans._utc(c[1]) for r in found for c in r[3])  # older copies
    (settle,) = [s for s in seen if s[0].startswith("SELECT DISTINCT project_id, trace_id")]
    assert "start_time >= toDateTime64(%(lo)s, 6, 'UTC')" in settle[0]  # bounded by the copies
    assert "start_time <= toDateTime64(%(hi)s, 6, 'UTC')" in settle[0]
    assert (settle[1]["lo"], settle[1]["hi"]) == (micro_text(starts[0]), micro_text(starts[-1]))
    df = _stored(store, org)
    assert df.height == len(sent)
    ref = _reference(df).with_columns(pl.col("llm_call_ref").alias("llm_call"))
    for table, every in GRAINS.items():
        got = _store_rollup(store, table, org)
        want = _polars_rollup(ref, every)
        assert got.select(KEYS, "spans", "tokens").to_dicts() == (
            want.select(KEYS, "spans", "tokens").to_dicts()
        ), table


def test_the_command_reads_the_span_store(ch_ingest, monkeypatch, capsys):
    """`python -m observatory_core remap` on the store, an org of its own: the spans it read
    and filled, not 0 (the fields stored after it), then nothing left to fill; a bad --since
    is one sentence."""
    from observatory_core.__main__ import main

    engine, store = ch_ingest.engine, ch_ingest.store
    org, (main_p, side) = make_org(engine, "remap-ch-command", ("main", "side"))
    sent = _rows(org, main_p, side)
    assert persist.write_spans(engine, sent) == len(sent)
    monkeypatch.setenv("DATABASE_URL", str(engine.url))
    get_settings.cache_clear()
    assert main(["remap", "--org", "remap-ch-command"]) == 0
    out = capsys.readouterr().out
    assert "Read 14 spans, filled fields of 11, rebuilt the rollups of 1 org(s)" in out
    df = _stored(store, org)
    assert df.height == len(sent)
    assert df.filter(pl.col("model") == "gpt-4o-mini").height == 11
    assert main(["remap", "--org", "remap-ch-command"]) == 0
    assert "Read 14 spans, filled fields of 0, rebuilt the rollups of 0" in capsys.readouterr().out
    assert main(["remap", "--org", "remap-ch-command", "--since", "last tuesday"]) == 2
    assert "is not a date" in capsys.readouterr().err


def test_a_cluster_store_is_refused_with_a_sentence(ch_ingest):
    from types import SimpleNamespace

    from observatory_core.base.errors import UserError
    from observatory_core.ingest.remap_span_store import remap_span_store

    store = SimpleNamespace(naming=SimpleNamespace(cluster="main"))
    with pytest.raises(UserError, match="cluster"):
        remap_span_store(ch_ingest.engine, store)


def test_a_span_past_its_retention_is_not_rewritten(ch_ingest, monkeypatch):
    """A copy of a span past its retention stamp would be counted by the views and dropped by
    the TTL as it is written: such a span is left as it is (here every stamped span is past it:
    the margin made ten years; each span on a day of its own)."""
    engine, store = ch_ingest.engine, ch_ingest.store
    org, (main,) = make_org(engine, "remap-ch-expired")
    sent = [_as_stored_before(org, main, NOW - timedelta(days=i), i) for i in range(3)]
    persist.write_spans(engine, sent)
    store.client.command(
        f"ALTER TABLE {store.table('spans')} UPDATE retain_days = 3650 "
        "WHERE org_id = %(org)s AND span_id = %(span)s",
        parameters={"org": org, "span": sent[0]["span_id"]},
        settings={"mutations_sync": 2},
    )
    monkeypatch.setattr(rewrite_spans, "EXPIRY_MARGIN", timedelta(days=3650 * 2))
    assert remap(engine, org_id=org).changed == 2
    df = _stored(store, org).sort("start_time", descending=True)
    assert df["operation"].to_list() == ["other", "chat", "chat"]
    assert df.height == 3


def test_only_the_changed_days_are_rebuilt(ch_ingest):
    """A day without a changed span keeps its rollup rows as they are, those of a span the TTL
    deleted among them (the rollups outlive the spans); the changed day's follow its spans."""
    engine, store = ch_ingest.engine, ch_ingest.store
    org, (main,) = make_org(engine, "remap-ch-days")
    changed = [_as_stored_before(org, main, NOW - timedelta(minutes=i), i) for i in range(3)]
    kept = [
        span(org, main, NOW - timedelta(days=2, minutes=i), model="gpt-4o", provider="openai",
             input_tokens=5, output_tokens=5)
        for i in range(3)
    ]  # fmt: skip
    persist.write_spans(engine, changed + kept)
    store.client.command(  # the TTL deletes one of the kept day's spans (stamped, merged)
        f"ALTER TABLE {store.table('spans')} UPDATE retain_days = 1 "
        "WHERE org_id = %(org)s AND span_id = %(span)s",
        parameters={"org": org, "span": kept[0]["span_id"]},
        settings={"mutations_sync": 2},
    )
    store.client.command(f"OPTIMIZE TABLE {store.table('spans')} FINAL")
    assert _stored(store, org).height == 5
    before = {t: _store_rollup(store, t, org) for t in GRAINS}
    remap(engine, org_id=org)
    kept_day = pl.col("bucket_start") < NOW - timedelta(days=1)
    for table, every in GRAINS.items():
        after = _store_rollup(store, table, org)
        assert after.filter(kept_day).to_dicts() == before[table].filter(kept_day).to_dicts()
        assert after.filter(kept_day)["spans"].sum() == 3  # the deleted span still counted
        ref = _reference(_stored(store, org)).with_columns(pl.col("llm_call_ref").alias("llm_call"))
        want = _polars_rollup(ref, every).filter(~kept_day)
        got = after.filter(~kept_day)
        assert got.select(KEYS, "spans", "tokens").to_dicts() == (
            want.select(KEYS, "spans", "tokens").to_dicts()
        ), table


def test_a_live_span_of_a_day_past_its_expiry_is_not_rewritten(ch_ingest, monkeypatch):
    """On its day's expiry date the day's first spans are past their stamp (the TTL deleted
    them; their rollup rows stay) while its last are not: a rewrite of a live one would
    rebuild the whole day from its spans and lose the deleted ones' rows. So no span of that
    day is rewritten; another day's is. Here "now" is the day's start plus the stamp plus 12
    hours (the margin moved to it), and the TTL's delete is done by hand."""
    engine, store = ch_ingest.engine, ch_ingest.store
    org, (main,) = make_org(engine, "remap-ch-expiry-day")
    day = datetime(NOW.year, NOW.month, NOW.day, tzinfo=UTC) - timedelta(days=1)
    early = _as_stored_before(org, main, day + timedelta(hours=1), 0)  # past its stamp
    late = _as_stored_before(org, main, day + timedelta(hours=20), 1)  # not yet
    other = _as_stored_before(org, main, NOW, 2)  # the next day's
    persist.write_spans(engine, [early, late, other])
    stamp = 3650
    store.client.command(
        f"ALTER TABLE {store.table('spans')} UPDATE retain_days = {stamp} WHERE org_id = %(org)s",
        parameters={"org": org},
        settings={"mutations_sync": 2},
    )
    store.client.command(  # as the TTL deletes `early` (the rollups keep it)
        f"ALTER TABLE {store.table('spans')} DELETE WHERE org_id = %(org)s AND span_id = %(s)s",
        parameters={"org": org, "s": early["span_id"]},
        settings={"mutations_sync": 2},
    )
    cutoff = day + timedelta(days=stamp, hours=12)
    monkeypatch.setattr(rewrite_spans, "EXPIRY_MARGIN", cutoff - datetime.now(UTC))
    assert late["start_time"] + timedelta(days=stamp) > cutoff  # live, span by span
    before = {t: _store_rollup(store, t, org) for t in GRAINS}
    assert before["rollup_1day"]["spans"].sum() == 3
    assert remap(engine, org_id=org).changed == 1  # the next day's span alone
    df = _stored(store, org).sort("start_time")
    assert df["operation"].to_list() == ["other", "chat"]
    expiring_day = pl.col("bucket_start") < day + timedelta(days=1)
    for table in GRAINS:
        after = _store_rollup(store, table, org)
        assert after.filter(expiring_day).to_dicts() == (
            before[table].filter(expiring_day).to_dicts()
        ), table
        assert after.filter(expiring_day)["spans"].sum() == 2, table  # the deleted span kept


def _recorded(monkeypatch, store) -> list[tuple[str, dict, list]]:
    """Every read the store's client answers from now on: (statement, parameters, rows)."""
    seen: list[tuple[str, dict, list]] = []
    query = store.client.query

    def recording(statement, *args, **kwargs):
        result = query(statement, *args, **kwargs)
        seen.append((statement, kwargs.get("parameters") or {}, list(result.result_rows)))
        return result

    monkeypatch.setattr(store.client, "query", recording)
    return seen


def _copies_of_a_page(store, org: int) -> int:
    """New copies of one page of the org's spans inserted, as a run stopped before its flush
    leaves them: how many."""
    rewriter = rewrite_spans.Rewriter(store, org)
    rows = next(rewrite_spans.pages(store, org))
    rewriter.rewrite(rows, [{} for _ in rows])
    return len(rows)


def test_the_leftover_scan_reads_the_org_remapped_alone(ch_ingest, monkeypatch):
    """Two orgs with copies a stopped run left; `remap --org` of one settles its copies and
    leaves the other's, and the scan for copies answers (and groups) that org's rows alone,
    not every org's."""
    engine, store = ch_ingest.engine, ch_ingest.store
    mine, (p,) = make_org(engine, "remap-ch-copies-mine")
    theirs, (q,) = make_org(engine, "remap-ch-copies-theirs")
    persist.write_spans(engine, [span(mine, p, NOW - timedelta(minutes=i)) for i in range(3)])
    persist.write_spans(engine, [span(theirs, q, NOW - timedelta(minutes=i)) for i in range(2)])
    assert _copies_of_a_page(store, mine) == 3
    assert _copies_of_a_page(store, theirs) == 2
    seen = _recorded(monkeypatch, store)
    remap(engine, org_id=mine)
    monkeypatch.undo()
    scans = [s for s in seen if "arrayFilter(c -> c.1 < newest" in s[0]]
    assert len(scans) == 1
    statement, params, rows = scans[0]
    assert params["orgs"] == [mine]
    assert statement.count("org_id IN %(orgs)s") == 2  # the candidates' grouping, and the rows'
    assert sorted(int(r[0]) for r in rows) == [mine] * 3
    assert _stored(store, mine).height == 3  # settled
    assert _stored(store, theirs).height == 4  # left for its own run
