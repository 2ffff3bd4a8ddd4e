"""The figures the twin-keeper tests (`test_twin_keeper.py`, `test_twin_keeper_traces.py`)
compare: the span store's org as SQLite's given the same batches, and both as polars over the
rows the rule counts (the figures by model through the raw path and the rollups, the error
counts, every rollup grain, the trace totals and the list's traces mode, the hour's distinct
users and actors, and the `spans` rows' twin fields)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from observatory_core.filters.spec import FilterSpec
from observatory_core.ingest import persist, to_clickhouse
from observatory_core.metrics.engine import run_metrics
from observatory_core.metrics.query import MetricQuery
from observatory_core.storage import latency_bins
from observatory_core.storage.clickhouse import wrapper_move_journal as move_journal
from observatory_core.storage.engine import get_engine
from observatory_core.storage.migrate import upgrade
from observatory_core.traces.query import list_spans
from tests.helpers import admin_scope, make_org
from tests.ingest.clickhouse.test_late_llm_call_resends import _every_grain_as_polars
from tests.ingest.clickhouse.test_late_llm_calls import (
    GRAINS,
    KEYS,
    _extremes_applied,
    _reference,
    _store_rollup,
)

NOW = datetime.now(UTC).replace(second=0, microsecond=0)
AT = NOW - timedelta(minutes=5)  # within the look-back (30 minutes)
SERIES = (
    "request_count.count",
    "total_cost.sum",
    "total_tokens.sum",
    "error_count.count",
    "duration_ms.p95",
)


def new_sqlite(tmp_path_factory, name: str):
    """A migrated SQLite database of the module's (its `sqlite` fixture)."""
    engine = get_engine(f"sqlite:///{tmp_path_factory.mktemp(name) / 'o.db'}")
    upgrade(engine)
    return engine


def _as(rows: list[dict], org: int, project: int) -> list[dict]:
    return [dict(r, org_id=org, project_id=project) for r in rows]


def _on_sqlite(sqlite, slug: str, batches: list[list[dict]]) -> int:
    """The same batches written to SQLite under an org of its own: its id."""
    org, (main,) = make_org(sqlite, slug, ("main",))
    patch = pytest.MonkeyPatch()
    patch.setattr(persist, "span_store", lambda: None)
    try:
        for batch in batches:
            persist.write_spans(sqlite, _as(batch, org, main))
    finally:
        patch.undo()
    return org


def _window(around: datetime) -> FilterSpec:
    """The hour before `around` to the hour after (at most now)."""
    hour = timedelta(hours=1)
    return FilterSpec(relative=None, start=around - hour, end=min(around + hour, NOW))


def _query(
    group_by: tuple[str, ...] = ("model", "provider"), series=SERIES, around: datetime = AT
) -> MetricQuery:
    return MetricQuery(series=series, filters=_window(around), bucket=None, group_by=group_by)


def _by_model_provider(engine, org: int, force: str, around: datetime = AT) -> list[tuple]:
    query = _query(around=around)
    result = run_metrics(engine, admin_scope(org), query, now=NOW, force=force)
    assert result.source == ("raw" if force == "raw" else "rollup")
    frame = result.frame.sort("model", "provider").select("model", "provider", *SERIES)
    return [(m, v, n, round(c, 9), t, e, round(p, 6)) for m, v, n, c, t, e, p in frame.rows()]


def _users(engine, org: int, force: str | None, around: datetime = AT) -> int:
    query = _query((), ("unique_users.count",), around)
    frame = run_metrics(engine, admin_scope(org), query, now=NOW, force=force).frame
    return int(frame["unique_users.count"][0])


def _ch_actors(store, org: int) -> list[tuple]:
    """The hours' users and sessions the span store keeps for the org."""
    rows = store.client.query(
        f"SELECT DISTINCT bucket_start, kind, actor FROM {store.table('rollup_actors_1hour')} "
        "WHERE org_id = %(org)s ORDER BY bucket_start, kind, actor",
        parameters={"org": org},
    ).result_rows
    return [(b.replace(tzinfo=UTC), k, a) for b, k, a in rows]


def _traces(engine, org: int, around: datetime = AT) -> list[tuple]:
    """The list's traces mode: (trace, spans, cost, tokens, errors) of each trace listed: the
    traces with a span that counts, a trace of twins set aside alone left out on every store
    (`traces/counted_traces.py`, `test_twin_only_traces.py`; the totals table is compared
    whole by `_ch_trace_totals`)."""
    spec = _window(around)
    page = list_spans(engine, admin_scope(org), spec, mode="traces", limit=100, now=NOW)
    return sorted(
        (
            r["trace_id"],
            r["span_count"],
            round(r["total_cost_usd"], 9),
            r["total_tokens"],
            r["error_count"],
        )
        for r in page.rows
    )


def _ch_trace_totals(store, org: int) -> list[tuple]:
    """The span store's trace totals summed per trace: (trace, spans, cost, tokens, errors,
    first start, last end, root span)."""
    rows = store.client.query(
        "SELECT trace_id, sum(span_count), round(sum(total_cost_usd), 9), sum(total_tokens), "
        "sum(error_count), min(first_start), max(last_end), max(root_span_id) "
        f"FROM {store.table('trace_totals')} WHERE org_id = %(org)s GROUP BY trace_id",
        parameters={"org": org},
    ).result_rows
    return sorted(
        (t, n, c, k, x, f.replace(tzinfo=UTC), e.replace(tzinfo=UTC), r)
        for t, n, c, k, x, f, e, r in rows
    )


def _ch_spans(store, org: int) -> dict[str, tuple]:
    rows = store.client.query(
        "SELECT span_id, duplicate_of, duplicate_trace_id, model, provider, "
        f"round(total_cost_usd, 9), cost_source, error_type, error_message "
        f"FROM {store.table('spans')} FINAL "
        "WHERE org_id = %(org)s",
        parameters={"org": org},
    ).result_rows
    return {r[0]: tuple(r[1:]) for r in rows}


def _sqlite_spans(engine, org: int) -> dict[str, tuple]:
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(
            "SELECT span_id, duplicate_of, duplicate_trace_id, model, provider, "
            "round(total_cost_usd, 9), cost_source, error_type, error_message FROM spans "
            "WHERE org_id = ?",
            (org,),
        ).all()
    return {r[0]: tuple(r[1:]) for r in rows}


def _polars(counted: list[dict]) -> tuple[list[tuple], list[tuple], int]:
    """By model and provider (requests, cost, tokens, errors, exact p95 duration), by trace
    and the users of the rows the rule counts."""
    df = pl.DataFrame(counted, infer_schema_length=None)
    failed = (pl.col("status") == "error").sum()
    by_model = (
        df.filter(pl.col("llm_call"))  # the requests are the LLM calls (`ingest/llm_calls.py`)
        .group_by("model", "provider")
        .agg(
            pl.len(),
            pl.col("total_cost_usd").sum(),
            pl.col("total_tokens").sum(),
            failed,
            pl.col("duration_ms").quantile(0.95, interpolation="linear"),
        )
        .sort("model", "provider")
    )
    traces = df.group_by("trace_id").agg(
        pl.len(),
        pl.col("total_cost_usd").sum(),
        pl.col("total_tokens").sum(),
        failed,
        pl.col("start_time").min(),
        pl.col("end_time").max(),
        pl.col("span_id").filter(pl.col("parent_span_id").is_null()).max().fill_null(""),
    )
    return (
        [(m, v, n, round(c, 9), t, x, p) for m, v, n, c, t, x, p in by_model.rows()],
        sorted((t, n, round(c, 9), k, x, f, e, r) for t, n, c, k, x, f, e, r in traces.rows()),
        df["user_id"].drop_nulls().n_unique(),
    )


def _rollup_errors(store, org: int) -> dict[str, list[tuple]]:
    """Each grain's `error_count` per key (keys counting a span), merged."""
    out = {}
    for table in GRAINS:
        rows = store.client.query(
            "SELECT bucket_start, project_id, toString(model), toString(operation), llm_call, "
            f"sum(error_count) FROM {store.table(table)} WHERE org_id = %(org)s "
            f"GROUP BY {', '.join(KEYS)} HAVING sum(span_count) > 0",
            parameters={"org": org},
        ).result_rows
        out[table] = sorted((b.replace(tzinfo=UTC), *rest) for b, *rest in rows)
    return out


def _polars_rollup_errors(ref: pl.DataFrame) -> dict[str, list[tuple]]:
    """As `_rollup_errors`, polars over the counted rows: each key's `status == 'error'`."""
    out = {}
    for table, every in GRAINS.items():
        frame = (
            ref.with_columns(
                pl.col("start_time").dt.truncate(every).alias("bucket_start"),
                pl.col("model").fill_null(""),
            )
            .group_by(KEYS)
            .agg((pl.col("status") == "error").sum())
        )
        out[table] = sorted(frame.rows())
    return out


def _polars_actors(counted: list[dict]) -> list[tuple]:
    out = set()
    for r in counted:
        hour = r["start_time"].replace(minute=0, second=0, microsecond=0)
        out |= {(hour, k, a) for k, a in (("user", r["user_id"]), ("session", r["session_id"]))}
    return sorted(x for x in out if x[2] is not None)


def _same_figures(
    store, org: int, sqlite, sqlite_org: int, counted: list[dict], around: datetime = AT
) -> None:
    """Every figure of the span store's org as SQLite's, and both as polars over `counted`
    (the metrics and lists over the hours around `around`)."""
    _extremes_applied(store)
    counted = _reference(counted).drop("id").to_dicts()  # each row's `llm_call` by the rule
    want_models, want_traces, want_users = _polars(counted)
    for force in ("raw", "rollup"):
        got, on_sqlite = (
            _by_model_provider(store.engine, org, force, around),
            _by_model_provider(sqlite, sqlite_org, force, around),
        )
        assert got == on_sqlite, force
        assert [g[:6] for g in got] == [w[:6] for w in want_models], force
        for g, w in zip(got, want_models, strict=True):  # the p95: exact raw, binned rolled up
            bound = 1e-6 if force == "raw" else latency_bins.RELATIVE_BOUND * w[6] + 1
            assert abs(g[6] - w[6]) <= bound, force
    assert _ch_trace_totals(store, org) == want_traces
    on_sqlite = _traces(sqlite, sqlite_org, around)
    assert _traces(store.engine, org, around) == on_sqlite == [t[:5] for t in want_traces]
    for force in ("raw", None):  # no rollup answers distinct users over this window
        users = _users(store.engine, org, force, around)
        assert users == _users(sqlite, sqlite_org, force, around) == want_users
    assert _ch_actors(store, org) == _polars_actors(counted)
    assert _ch_spans(store, org) == _sqlite_spans(sqlite, sqlite_org)
    ref = pl.DataFrame(counted, infer_schema_length=None).with_columns(
        pl.col("start_time").dt.replace_time_zone("UTC")
    )
    _every_grain_as_polars(store, org, ref)
    assert _rollup_errors(store, org) == _polars_rollup_errors(ref)
    assert move_journal.pending(store, [org]) == []


def _write(ch_ingest, batches: list[list[dict]]) -> None:
    for batch in batches:
        assert to_clickhouse.write_spans(ch_ingest.store, ch_ingest.engine, batch) == len(batch)


def _org_figures(store, org: int) -> dict:
    """Everything the span store keeps of an org: rollups, trace totals, actors, spans."""
    return {
        "rollups": {t: _store_rollup(store, t, org).to_dicts() for t in GRAINS},
        "traces": _ch_trace_totals(store, org),
        "actors": _ch_actors(store, org),
        "spans": _ch_spans(store, org),
    }
