"""An insert whose views failed part-way (the spans stored, some views without them) is put right
when its spans are sent again (`view_gaps.py`): the rollups at every grain and the trace totals
then agree with polars on the sent spans, and a further resend changes nothing.

The failure is made as the engine leaves it: the spans' part written, the views after the
failing one not run (a view detached during the insert, attached again after)."""

from __future__ import annotations

from contextlib import contextmanager
from datetime import UTC

import polars as pl
import pytest

from observatory_core.storage.clickhouse import ddl
from observatory_core.storage.clickhouse.cluster import Naming
from observatory_core.storage.clickhouse.writes import write_spans
from tests.storage.clickhouse.conftest import demo_rows, written_ago

ORG = 51


def _rows(seed: int) -> list[dict]:
    """300 demo spans of `ORG`, every seventh a twin set aside (`duplicate_of`: stored, not
    counted by the views nor by a top-up)."""
    rows = [dict(r, org_id=ORG) for r in demo_rows(300, seed=seed)]
    for i in range(3, len(rows), 7):
        twin = rows[i - 1]
        rows[i] = dict(rows[i], duplicate_of=twin["span_id"], duplicate_trace_id=twin["trace_id"])
    return rows


# (views that fail, rows written while they do): the minute's view fails (and with it the hour
# and day it feeds); the hour's fails after the minute's ran; the trace totals' fails
FAILING = (
    (("rollup_1min_mv",), _rows(61)),
    (("rollup_1hour_mv", "trace_totals_mv"), _rows(62)),
    (("rollup_1day_mv",), _rows(63)),
)
WHOLE = _rows(64)
SENT = [r for _, rows in FAILING for r in rows] + WHOLE
COUNTED = [r for r in SENT if r["duplicate_of"] is None]
# a rollup row's key compared besides its bucket
KEY = ("project_id", "model", "llm_call")


def _rollups(store, grain: str, org: int = ORG) -> dict:
    rows = store.client.query(
        f"SELECT bucket_start, {', '.join(KEY)}, sum(span_count), sum(error_count), "
        "sum(total_tokens_sum), sum(total_cost_sum), max(duration_max), "
        "arraySum(mapValues(sumMap(latency_bins))) "
        f"FROM {store.table('rollup_' + grain)} WHERE org_id = {org} "
        f"GROUP BY bucket_start, {', '.join(KEY)}"
    ).result_rows
    return {(_utc(b), p, m, bool(c)): tuple(rest) for b, p, m, c, *rest in rows}


def _utc(value):
    """The driver hands a DateTime('UTC') back in the local zone, a DateTime64 without one."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _want_rollups(grain: str, sent: list[dict] = COUNTED) -> dict:
    every = {"1min": "1m", "1hour": "1h", "1day": "1d"}[grain]
    frame = (
        pl.DataFrame(sent, infer_schema_length=None)
        .with_columns(pl.col("model").fill_null(""), pl.col("llm_call").cast(pl.Boolean))
        .group_by(pl.col("start_time").dt.truncate(every).alias("bucket"), *KEY)
        .agg(
            pl.len(),
            (pl.col("status") == "error").sum(),
            pl.col("total_tokens").sum(),
            pl.col("total_cost_usd").sum(),
            pl.col("duration_ms").max().alias("longest"),
            pl.col("duration_ms").count().alias("latencies"),
        )
    )
    return {r[:4]: r[4:] for r in frame.iter_rows()}


def _traces(store, org: int = ORG) -> dict:
    rows = store.client.query(
        "SELECT trace_id, sum(span_count), sum(error_count), sum(total_tokens), "
        "sum(total_cost_usd), min(first_start), max(last_end), max(root_span_id) "
        f"FROM {store.table('trace_totals')} WHERE org_id = {org} GROUP BY trace_id"
    ).result_rows
    return {
        t: (n, e, tok, cost, _utc(first), _utc(last), root)
        for t, n, e, tok, cost, first, last, root in rows
    }


def _want_traces(sent: list[dict] = COUNTED) -> dict:
    frame = (
        pl.DataFrame(sent, infer_schema_length=None)
        .group_by("trace_id")
        .agg(
            pl.len(),
            (pl.col("status") == "error").sum(),
            pl.col("total_tokens").sum(),
            pl.col("total_cost_usd").sum(),
            pl.col("start_time").min(),
            pl.col("end_time").max(),
            pl.col("span_id").filter(pl.col("parent_span_id").is_null()).max().fill_null(""),
        )
    )
    return {r[0]: r[1:] for r in frame.iter_rows()}


def _same(got: dict, want: dict) -> bool:
    if got.keys() != want.keys():
        return False
    for key, values in want.items():
        for g, w in zip(got[key], values, strict=True):
            if isinstance(w, float) or isinstance(g, float):
                if g != pytest.approx(w, rel=1e-9, abs=1e-9):
                    return False
            elif g != w:
                return False
    return True


@pytest.fixture(scope="module")
def failed(chdb_store):
    store = chdb_store
    with written_ago():  # inserts long finished: a resend may top their rows up
        for views, rows in FAILING:
            with _views_failing(store, views):
                assert write_spans(store, rows) == len(rows)
        assert write_spans(store, WHOLE) == len(WHOLE)
    return store


@contextmanager
def _views_failing(store, views):
    """Inserts meanwhile store their spans and skip `views` (and the views those feed)."""
    for view in views:
        store.client.command(f"DETACH TABLE {store.table(view)}")
    try:
        yield
    finally:
        for view in views:
            store.client.command(f"ATTACH TABLE {store.table(view)}")


def test_a_resend_puts_back_what_failed_views_left_out(failed):
    store = failed
    grains = ("1min", "1hour", "1day")
    # what the failures left: every grain and the trace totals short of the sent spans
    for grain in grains:
        assert not _same(_rollups(store, grain), _want_rollups(grain)), grain
    assert not _same(_traces(store), _want_traces())

    assert write_spans(store, SENT[::-1], batch_size=500) == 0  # all stored: none written
    for grain in grains:
        assert _same(_rollups(store, grain), _want_rollups(grain)), grain
    assert _same(_traces(store), _want_traces())
    ((spans,),) = store.client.query(
        f"SELECT count() FROM {store.table('spans')} WHERE org_id = {ORG}"
    ).result_rows
    assert spans == len(SENT)

    # sent once more: nothing is short, nothing changes
    before = [
        store.client.query(f"SELECT count() FROM {store.table(t)}").result_rows
        for t in ("rollup_1min", "rollup_1hour", "rollup_1day", "trace_totals")
    ]
    assert write_spans(store, SENT) == 0
    after = [
        store.client.query(f"SELECT count() FROM {store.table(t)}").result_rows
        for t in ("rollup_1min", "rollup_1hour", "rollup_1day", "trace_totals")
    ]
    assert after == before
    for grain in grains:
        assert _same(_rollups(store, grain), _want_rollups(grain)), grain
    assert _same(_traces(store), _want_traces())


def _views_finish(store, org: int) -> None:
    """What an insert's views write once they run, for `org`'s stored spans: the minute's view
    (whose rows the hour's and day's fold) and the trace totals', as `ddl.py` declares them."""
    naming = Naming(store.database)
    minute = ddl._rollups(naming, bins=True, views_only=True)[0]
    (traces,) = ddl._trace_totals(naming, versions=True, retention=True, view_only=True)
    spans = store.table("spans")
    for view, table in ((minute, "rollup_1min"), (traces, "trace_totals")):
        select = view.split("\nAS ", 1)[1].replace(
            f"FROM {spans} AS spans", f"FROM (SELECT * FROM {spans} WHERE org_id = {org}) AS spans"
        )
        store.client.command(f"INSERT INTO {store.table(table)} {select}")


def test_a_resend_while_the_first_inserts_views_still_run_counts_once(chdb_store):
    """The client gave up on an insert (a timeout, a lost connection) while the server still
    runs its views: the spans' part is stored, the views' rows not yet. The resend must not
    top those spans up, or they count twice once the views finish."""
    store, org = chdb_store, ORG + 1
    rows = [dict(r, org_id=org) for r in demo_rows(300, seed=65)]
    with _views_failing(store, ("rollup_1min_mv", "trace_totals_mv")):
        assert write_spans(store, rows) == len(rows)  # the spans' part: the views still to run
    assert write_spans(store, rows[::-1], batch_size=100) == 0  # the exporter's retry
    _views_finish(store, org)
    for grain in ("1min", "1hour", "1day"):
        assert _same(_rollups(store, grain, org), _want_rollups(grain, rows)), grain
    assert _same(_traces(store, org), _want_traces(rows))


def test_a_failing_top_up_still_stores_the_batchs_new_spans(chdb_store, monkeypatch, caplog):
    """The top-up is a repair, not the batch's work: when it fails (a timeout, the server
    busy), the batch's new spans are stored all the same and the failure is logged, rather than
    a 503 whose retry would repeat the same failing work for ever."""
    from clickhouse_connect.driver.exceptions import DatabaseError

    from observatory_core.storage.clickhouse import writes

    store, org = chdb_store, ORG + 2
    rows = [dict(r, org_id=org) for r in demo_rows(200, seed=66)]
    old, new = rows[:100], rows[100:]
    with written_ago():
        assert write_spans(store, old) == len(old)
    called = []

    def failing(*args, **kwargs):
        called.append(args)
        raise DatabaseError("Code: 159. DB::Exception: Timeout exceeded: elapsed 60 seconds")

    monkeypatch.setattr(writes, "fill_gaps", failing)
    with caplog.at_level("WARNING"):
        assert write_spans(store, rows) == len(
            {r["span_id"] for r in new} - {r["span_id"] for r in old}
        )
    assert called  # the stored spans were old enough to be judged
    ((stored,),) = store.client.query(
        f"SELECT count() FROM {store.table('spans')} WHERE org_id = {org}"
    ).result_rows
    assert stored == len({(r["trace_id"], r["span_id"]) for r in rows})
    assert any("Timeout exceeded" in r.getMessage() for r in caplog.records)


def test_a_key_with_missing_and_deleted_spans_is_never_taken_from(chdb_store):
    """One rollup key and trace holds spans the TTL deleted (in the views, gone from spans)
    and, fewer, spans a failed view left out (in spans, not in the views). The spans count
    more, but some of the row's counts (quality scores, errors) and tokens are larger than
    the spans': nothing may be taken out, and no count may wrap below zero (a UInt64)."""
    store, org = chdb_store, ORG + 3
    (base,) = [
        dict(r, org_id=org, parent_span_id=None, status="ok")
        for r in demo_rows(60, seed=67)
        if r["total_tokens"]
    ][:1]
    start = base["start_time"].replace(second=0, microsecond=0)

    def copies(prefix: str, n: int, **values) -> list[dict]:
        return [
            dict(base, span_id=f"{prefix}{i:015d}", start_time=start, **values) for i in range(n)
        ]

    deleted = copies("d", 3, quality_score=0.9, total_tokens=1000)
    missed = copies("m", 5, quality_score=None, total_tokens=10)
    with written_ago():
        assert write_spans(store, deleted) == 3
        with _views_failing(store, ("rollup_1min_mv", "trace_totals_mv")):
            assert write_spans(store, missed) == 5
    ids = ", ".join(f"'{r['span_id']}'" for r in deleted)
    store.client.command(
        f"ALTER TABLE {store.table('spans')} DELETE WHERE org_id = {org} AND span_id IN ({ids})",
        settings={"mutations_sync": 2},
    )

    def figures() -> tuple:
        ((quality, wrapped),) = store.client.query(
            "SELECT sum(toFloat64(quality_count)), countIf(quality_count > 4294967296) "
            f"FROM {store.table('rollup_1min')} WHERE org_id = {org}"
        ).result_rows
        ((tokens, spans),) = store.client.query(
            "SELECT sum(total_tokens), sum(span_count) "
            f"FROM {store.table('trace_totals')} WHERE org_id = {org}"
        ).result_rows
        return quality, wrapped, tokens, spans

    before = figures()
    assert before == (3.0, 0, 3000, 3)
    assert write_spans(store, missed) == 0
    quality, wrapped, tokens, spans = figures()
    assert wrapped == 0 and quality >= before[0]
    assert tokens >= before[2] and spans >= before[3]


def test_no_top_up_while_the_server_still_runs_an_insert_into_the_spans(chdb_store):
    """Besides the spans' age, the server's own list of running queries: an insert into the
    spans still running (its views perhaps not yet run) puts the top-up off."""
    from types import SimpleNamespace

    from observatory_core.storage.clickhouse.connect import SpanStore
    from observatory_core.storage.clickhouse.view_gaps import fill_gaps

    sent: list[str] = []

    class Busy:
        def query(self, sql, parameters=None, settings=None, **kw):
            sent.append(sql)
            return SimpleNamespace(result_rows=[(1,)] if "system.processes" in sql else [])

        def command(self, sql, parameters=None, settings=None, **kw):
            sent.append(sql)

    store = SpanStore(chdb_store.target, Busy())
    start = demo_rows(1, seed=68)[0]["start_time"]
    assert fill_gaps(store, ORG, [(101, "a" * 32, start)]) == 0
    assert len(sent) == 1 and "system.processes" in sent[0]


def _actors(store, org: int) -> set:
    rows = store.client.query(
        f"SELECT DISTINCT bucket_start, project_id, kind, actor FROM "
        f"{store.table('rollup_actors_1hour')} WHERE org_id = {org}"
    ).result_rows
    return {(_utc(b), p, k, a) for b, p, k, a in rows}


def _want_actors(sent: list[dict]) -> set:
    frame = pl.DataFrame(sent, infer_schema_length=None).filter(pl.col("duplicate_of").is_null())
    frame = frame.with_columns(pl.col("start_time").dt.truncate("1h").alias("hour"))
    return {
        (hour, project, kind, actor)
        for kind, column in (("user", "user_id"), ("session", "session_id"))
        for hour, project, actor in frame.select("hour", "project_id", column).drop_nulls().rows()
    }


def test_a_resend_puts_back_the_hours_actors_a_failed_view_left_out(chdb_store):
    """The hours' users and sessions (`rollup_actors_1hour`, schema version 5) of a batch
    written while their view failed are put back by a resend, as polars finds them on the
    counted spans (the twins set aside not among them); a further resend writes nothing."""
    store, org = chdb_store, ORG + 4
    failing = [dict(r, org_id=org) for r in _rows(69)]
    whole = [dict(r, org_id=org) for r in _rows(70)]
    with written_ago():
        with _views_failing(store, ("rollup_actors_1hour_mv",)):
            assert write_spans(store, failing) == len(failing)
        assert write_spans(store, whole) == len(whole)
    want = _want_actors(failing + whole)
    assert len(want) > 50 and _actors(store, org) == _want_actors(whole) != want

    assert write_spans(store, failing[::-1], batch_size=100) == 0
    assert _actors(store, org) == want
    ((rows,),) = store.client.query(
        f"SELECT count() FROM {store.table('rollup_actors_1hour')} WHERE org_id = {org}"
    ).result_rows
    assert write_spans(store, failing + whole) == 0
    assert store.client.query(
        f"SELECT count() FROM {store.table('rollup_actors_1hour')} WHERE org_id = {org}"
    ).result_rows == [(rows,)]
    assert _actors(store, org) == want


def test_a_resend_between_remaps_trace_rebuild_and_its_delete_counts_once(chdb_store):
    """Remap writes a span again as a new copy, rebuilds its trace's totals from the newest
    copies, and only then deletes the older copies (`rewrite_spans.py`). A resend landing in
    between finds the spans stored: its top-up must read the newest copy of each span, or it
    takes the trace for short (two rows a span) and counts the rewritten spans twice. (The
    table's merges, which fold copies, are stopped meanwhile: the moment before one.)"""
    from observatory_core.storage.clickhouse import rewrite_spans

    store, org = chdb_store, ORG + 5
    rows = [dict(r, org_id=org) for r in demo_rows(120, seed=66)]
    counted = [r for r in rows if r["duplicate_of"] is None]
    spans = store.table("spans")
    store.client.command(f"SYSTEM STOP MERGES {spans}")
    try:
        with written_ago():  # long finished, the copies too: a resend may top their traces up
            assert write_spans(store, rows) == len(rows)
            rewriter = rewrite_spans.Rewriter(store, org)
            for page in rewrite_spans.pages(store, org):
                rewriter.rewrite(page, [{} for _ in page])  # a copy of each span, not flushed
        traces: dict[int, dict] = {}
        for r in rows:
            of_project = traces.setdefault(r["project_id"], {})
            of_project.setdefault(r["trace_id"], []).append(r["start_time"])
        for project, of_project in traces.items():
            rewrite_spans.rebuild_traces(store, org, project, of_project)
        ((stored,),) = store.client.query(
            f"SELECT count() FROM {spans} WHERE org_id = {org}"
        ).result_rows
        assert stored == 2 * len(rows)  # the older copies still there
        assert _same(_traces(store, org), _want_traces(counted))
        assert write_spans(store, rows[::-1], batch_size=50) == 0  # the resend: all stored
        assert _same(_traces(store, org), _want_traces(counted))
    finally:
        store.client.command(f"SYSTEM START MERGES {spans}")
