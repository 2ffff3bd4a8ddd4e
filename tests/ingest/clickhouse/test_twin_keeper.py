"""Which copy of a call sent twice counts, when the second copy arrives in a later batch: the
rule of `ingest/dedup.pick_keeper` (the richer content, then the stored one, ...), the counted
span taking from its twin the model, provider and, when unpriced, the cost it lacks
(`dedup._take`), on SQLite and on the ClickHouse span store alike (there a stored copy that
stops counting or takes fields is restated after the batch's insert:
`ingest/span_store_twins.py`, `storage/clickhouse/wrapper_moves.py`).

Each case compares the span store with SQLite given the same batches, and both with polars
over the rows the rule counts (written out by hand): the figures by model through the raw
path and the rollups, every rollup grain, the trace totals (the list's traces mode), the
hour's distinct users, and which `spans` row carries `duplicate_of`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from observatory_core.filters.spec import FilterSpec
from observatory_core.ingest import dedup, persist, to_clickhouse
from observatory_core.metrics.engine import run_metrics
from observatory_core.metrics.query import MetricQuery
from observatory_core.storage import latency_bins
from observatory_core.storage.clickhouse import layout, move_traces, wrapper_moves
from observatory_core.storage.clickhouse import wrapper_move_journal as move_journal
from observatory_core.storage.clickhouse import wrapper_move_plan as planning
from observatory_core.storage.engine import get_engine
from observatory_core.storage.migrate import upgrade
from observatory_core.traces.query import list_spans
from tests.helpers import admin_scope, child_of, make_org, span
from tests.ingest.clickhouse.test_late_llm_call_resends import (
    _call_under,
    _every_grain_as_polars,
    _Failed,
    _refused,
    _refused_with,
)
from tests.ingest.clickhouse.test_late_llm_calls import (
    GRAINS,
    KEYS,
    _extremes_applied,
    _reference,
    _store_rollup,
    _wrapper,
)
from tests.storage.clickhouse.conftest import written_ago
from tests.storage.clickhouse.test_view_gaps import _views_failing

NOW = datetime.now(UTC).replace(second=0, microsecond=0)
AT = NOW - timedelta(minutes=5)  # within the look-back (30 minutes)
SAME = dict(service_name="svc", input_tokens=120, output_tokens=30, duration_ms=800.0)
SERIES = (
    "request_count.count",
    "total_cost.sum",
    "total_tokens.sum",
    "error_count.count",
    "duration_ms.p95",
)


@dataclass
class Case:
    """A case's batches (stored first, then the later ones) and the rows the rule counts."""

    batches: list[list[dict]]
    counted: list[dict]


def _separate(org: int, project: int) -> Case:
    """Two traces, one call: the stored copy names the dated model and the user, the later one
    is richer (its prompt and answer) and names the model plainly. The rule keeps the richer;
    the stored copy, set aside, takes its trace's totals and its user with it."""
    stored = span(org, project, AT, **SAME, scope_name="openai.sdk", model="gpt-4o-2024-08-06",
                  provider="openai", input_cost_usd=0.002, output_cost_usd=0.001,
                  user_id="u-stored")  # fmt: skip
    later = span(org, project, AT + timedelta(milliseconds=10), **SAME, scope_name="openllmetry",
                 model="gpt-4o", provider="openai", input_cost_usd=0.003, output_cost_usd=0.002,
                 input_text="hello", output_text="hi there")  # fmt: skip
    return Case([[stored], [later]], [later])


def _nested(org: int, project: int) -> Case:
    """One trace, the library's span stored first without the model (unpriced), the SDK's
    span below it later with the model and its cost. The rule keeps the stored parent, which
    takes the model, provider and cost from its twin."""
    stored = span(org, project, AT, **SAME, scope_name="agent.lib", model=None, provider=None,
                  cost_source="unpriced", user_id="u-1")  # fmt: skip
    later = child_of(stored, AT + timedelta(milliseconds=5), **SAME, scope_name="openai.sdk",
                     model="gpt-4o", provider="openai", input_cost_usd=0.004,
                     output_cost_usd=0.002)  # fmt: skip
    taken = {n: later[n] for n in ("model", "provider", "input_cost_usd", "output_cost_usd",
                                   "total_cost_usd", "cost_source")}  # fmt: skip
    return Case([[stored], [later]], [dict(stored, **taken)])


def _richer_child(org: int, project: int) -> Case:
    """One trace, the library's span stored first (the trace's root, failed), the SDK's span
    below it later with the prompt and answer: the rule keeps the richer child, and the
    trace's root, set aside, leaves its totals (no counted root, the child's start first, no
    error)."""
    stored = span(org, project, AT, **SAME, scope_name="agent.lib", model="gpt-4o",
                  provider="openai", input_cost_usd=0.001, output_cost_usd=0.001,
                  status="error")  # fmt: skip
    later = child_of(stored, AT + timedelta(milliseconds=5), **SAME, scope_name="openai.sdk",
                     model="gpt-4o-2024-08-06", provider="openai", input_cost_usd=0.004,
                     output_cost_usd=0.002, input_text="q", output_text="a")  # fmt: skip
    return Case([[stored], [later]], [later])


def _richer_child_beside(org: int, project: int) -> Case:
    """`_richer_child` with a tool span of the same trace in the later batch, starting before
    the richer child and with a user of its own: the trace's totals restated over the
    batch's insert (the root set aside, the tool span's start the first)."""
    case = _richer_child(org, project)
    (stored,), (later,) = case.batches
    tool = child_of(stored, AT + timedelta(milliseconds=2), service_name="svc",
                    operation="tool", duration_ms=100.0, input_cost_usd=0.0007,
                    output_cost_usd=0.0, user_id="u-tool")  # fmt: skip
    return Case([[stored], [later, tool]], [later, tool])


def _two_pairs(org: int, project: int) -> Case:
    """Two calls of one minute and key, each stored first and its richer copy later: one
    batch restates both stored copies (one move), the key they shared emptied of both."""
    one = _separate(org, project)
    stored = span(org, project, AT + timedelta(seconds=7), **SAME, scope_name="openai.sdk",
                  model="gpt-4o-2024-08-06", provider="openai", input_cost_usd=0.001,
                  output_cost_usd=0.001, user_id="u-2")  # fmt: skip
    later = span(org, project, AT + timedelta(seconds=7, milliseconds=20), **SAME,
                 scope_name="openllmetry", model="gpt-4o", provider="openai",
                 input_cost_usd=0.001, output_cost_usd=0.003, input_text="q",
                 output_text="ok")  # fmt: skip
    return Case([one.batches[0] + [stored], one.batches[1] + [later]], [*one.counted, later])


def _nested_twice(org: int, project: int) -> Case:
    """The stored parent restated by two batches back to back: the second copy (unpriced too)
    gives it the model and provider, the third its cost; the parent counts throughout."""
    stored = span(org, project, AT, **SAME, scope_name="agent.lib", model=None, provider=None,
                  cost_source="unpriced", user_id="u-1")  # fmt: skip
    second = child_of(stored, AT + timedelta(milliseconds=5), **SAME, scope_name="otel.genai",
                      model="gpt-4o", provider="openai", cost_source="unpriced")  # fmt: skip
    third = child_of(stored, AT + timedelta(milliseconds=7), **SAME, scope_name="openai.sdk",
                     model="gpt-4o", provider="openai", input_cost_usd=0.004,
                     output_cost_usd=0.002)  # fmt: skip
    taken = {n: second[n] for n in ("model", "provider")}
    taken |= {n: third[n] for n in ("input_cost_usd", "output_cost_usd", "total_cost_usd",
                                    "cost_source")}  # fmt: skip
    return Case([[stored], [second], [third]], [dict(stored, **taken)])


def _chain(org: int, project: int) -> Case:
    """Three instrumentations of one failed call, one batch each: the second copy is set
    aside for the stored first (no richer); the third, richer, sets the first aside (its
    error leaves the key they share: status is a rollup key), and the second is pointed at it
    too (`dedup._mark`)."""
    first, second, third = (
        span(
            org,
            project,
            AT + timedelta(milliseconds=ms),
            **SAME,
            scope_name=scope,
            model="gpt-4o",
            provider="openai",
            input_cost_usd=0.001 * k,
            output_cost_usd=0.001,
            status="error",
            **extra,
        )  # fmt: skip
        for ms, scope, k, extra in (
            (0, "lib.a", 1, {}),
            (10, "lib.b", 2, {}),
            (20, "lib.c", 3, {"input_text": "q", "output_text": "a"}),
        )
    )
    return Case([[first], [second], [third]], [third])


def _error_only(org: int, project: int) -> Case:
    """A failed call: the stored copy, richer (its prompt), keeps counting and takes from its
    later twin only the error type and message it lacks. No figure reads either (the error
    counts are by status, which a twin never takes): its restatement is its `spans` row's
    mutation alone (`SPANS_ONLY`)."""
    failed = dict(SAME, model="gpt-4o", provider="openai", status="error", user_id="u-failed")
    stored = span(org, project, AT + timedelta(seconds=11), **failed, scope_name="openllmetry",
                  input_cost_usd=0.003, output_cost_usd=0.002, input_text="hello")  # fmt: skip
    later = span(org, project, AT + timedelta(seconds=11, milliseconds=10), **failed,
                 scope_name="openai.sdk", input_cost_usd=0.003, output_cost_usd=0.002,
                 error_type="RateLimitError", error_message="429: slow down")  # fmt: skip
    taken = {n: later[n] for n in ("error_type", "error_message")}
    return Case([[stored], [later]], [dict(stored, **taken)])


def _beside(org: int, project: int) -> list[dict]:
    """Spans of the org's around the twins: another call in the stored copy's minute (its key
    kept), and a span of the later copy's trace in the separate case's way (none here)."""
    return [span(org, project, AT + timedelta(seconds=3), service_name="svc", model="gpt-4o",
                 provider="openai", duration_ms=300.0, input_tokens=9, output_tokens=2,
                 input_cost_usd=0.0005, output_cost_usd=0.0001, user_id="u-other")]  # fmt: skip


CASES = {
    "separate": _separate,
    "nested": _nested,
    "richer-child": _richer_child,
    "richer-child-beside": _richer_child_beside,
    "two-pairs": _two_pairs,
    "nested-twice": _nested_twice,
    "chain": _chain,
    "error-only": _error_only,
}
SPANS_ONLY = {"error-only"}  # restated by the `spans` row's mutation alone


@pytest.fixture(scope="module")
def sqlite(tmp_path_factory):
    engine = get_engine(f"sqlite:///{tmp_path_factory.mktemp('keeper-sqlite') / 'o.db'}")
    upgrade(engine)
    yield engine
    engine.dispose()


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
    """The list's traces mode: (trace, spans, cost, tokens, errors) of each trace listed with a span
    that counts (every store lists a trace whose spans are all set aside too, with nothing
    counted: `test_twin_only_traces.py`; the totals table is compared whole by
    `_ch_trace_totals`)."""
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
        if r["span_count"]
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


def _new_org(ch_ingest, slug: str, name: str) -> tuple[int, Case]:
    """A new org of the span store and the case's rows for it, the `_beside` spans in its
    first batch."""
    org, (main,) = make_org(ch_ingest.engine, slug, ("main",))
    case = CASES[name](org, main)
    beside = _beside(org, main)
    return org, Case([case.batches[0] + beside, *case.batches[1:]], case.counted + beside)


def _write(ch_ingest, batches: list[list[dict]]) -> None:
    for batch in batches:
        assert to_clickhouse.write_spans(ch_ingest.store, ch_ingest.engine, batch) == len(batch)


@pytest.mark.parametrize("name", list(CASES))
def test_the_span_store_counts_the_copy_the_rule_keeps(ch_ingest, sqlite, name):
    """The later copy in a batch of its own: each figure as SQLite's and polars'; another org
    holding the same stored copy (no later twin of its own) keeps its rollups, trace totals,
    actors and spans as they were; the later batch sent again stores nothing new and changes
    no figure (its copy is found stored, so it pairs with nothing). One restatement per case
    for the three checks: each costs seconds of the engine's mutations."""
    engine, store = ch_ingest.engine, ch_ingest.store
    other, (other_main,) = make_org(engine, f"keeper-other-{name}", ("main",))
    org, case = _new_org(ch_ingest, f"keeper-{name}", name)
    mine = _as(case.batches[0], other, other_main)
    assert to_clickhouse.write_spans(store, engine, mine) == len(mine)
    _write(ch_ingest, case.batches[:-1])
    before = _org_figures(store, other)
    plans = []
    patch = pytest.MonkeyPatch()
    patch.setattr(planning, "plan", lambda *a: plans.append(_REAL_PLAN(*a)) or plans[-1])
    try:
        _write(ch_ingest, case.batches[-1:])
    finally:
        patch.undo()
    # what the restatement sent beyond the `spans` row's mutation: nothing when no figure
    # reads a column it changes
    (plan,) = plans
    light = not plan.rows and not plan.added and not plan.traces and not plan.actors
    assert light == (name in SPANS_ONLY)
    sqlite_org = _on_sqlite(sqlite, f"keeper-{name}", case.batches)
    _same_figures(store, org, sqlite, sqlite_org, case.counted)
    _extremes_applied(store)
    assert _org_figures(store, other) == before
    assert to_clickhouse.write_spans(store, engine, case.batches[-1]) == 0  # the resend
    _same_figures(store, org, sqlite, sqlite_org, case.counted)


@pytest.mark.parametrize("name", [n for n in CASES if n not in ("chain", "nested-twice")])
def test_twins_of_one_batch_count_the_copy_the_rule_keeps(ch_ingest, sqlite, name):
    """Both copies in one batch (the rule among new spans, as before): as SQLite, as polars.
    (Three copies in one batch pair two of them, on every store: not the chain's answer.)"""
    org, case = _new_org(ch_ingest, f"keeper-one-{name}", name)
    batch = [r for b in case.batches for r in b]
    assert to_clickhouse.write_spans(ch_ingest.store, ch_ingest.engine, batch) == len(batch)
    sqlite_org = _on_sqlite(sqlite, f"keeper-one-{name}", [batch])
    _same_figures(ch_ingest.store, org, sqlite, sqlite_org, case.counted)


def _fails_at_trace_totals(store, rows, table="rollup_1min"):
    """The move's insert into the trace totals failing (the rollups' landed)."""
    if table == "trace_totals":
        raise _Failed(table)
    _REAL_INSERT(store, rows, table)


_REAL_INSERT = wrapper_moves._insert
_REAL_PLAN = planning.plan
# (case, step, whether it ran before the failure): the separate case's restatement inserts
# nothing (its stored copy's keys and trace are emptied: deletes alone); the error-only case's
# is its `spans` row's mutation alone
FAILURES = [
    ("nested", "_insert", False),
    ("nested", "_insert", True),
    ("nested", "trace_totals", False),
    ("nested", "_settle_key", True),
    ("nested", "_clear_flags", False),
    ("separate", "_settle_key", True),
    ("separate", "_clear_flags", False),
    ("richer-child", "_settle_key", True),
    ("error-only", "_clear_flags", False),  # the light path's one statement
]


@pytest.mark.parametrize(("name", "step", "runs"), FAILURES)
def test_a_restatement_failing_part_way_is_finished_by_the_orgs_next_batch(
    ch_ingest, sqlite, name, step, runs
):
    """The store fails part-way through the stored twin's restatement: the batch is refused
    (503), its spans stored, the restatement pending; the org's next batch (another call)
    finishes it without adding anything twice: every figure as SQLite's given the same
    batches, and as polars."""
    slug = f"keeper-fail-{name}-{step.strip('_').replace('_', '-').lower()}-{int(runs)}"
    org, case = _new_org(ch_ingest, slug, name)
    engine, store = ch_ingest.engine, ch_ingest.store
    _write(ch_ingest, case.batches[:-1])
    if step == "trace_totals":
        _refused_with(store, engine, case.batches[-1], wrapper_moves, "_insert",
                      _fails_at_trace_totals)  # fmt: skip
    else:
        _refused(store, engine, case.batches[-1], step, step_runs=runs)
    assert len(move_journal.pending(store, [org])) == 1
    main = case.batches[0][0]["project_id"]
    plain = span(org, main, AT + timedelta(minutes=2), service_name="svc", model="gpt-4o",
                 provider="openai", duration_ms=90.0, input_tokens=3, output_tokens=1)  # fmt: skip
    assert to_clickhouse.write_spans(store, engine, [plain]) == 1
    sqlite_org = _on_sqlite(sqlite, slug, [*case.batches, [plain]])
    _same_figures(store, org, sqlite, sqlite_org, [*case.counted, plain])


@pytest.mark.parametrize(
    ("name", "step", "runs"),
    [("nested", "_insert", False), ("nested", "_insert", True),
     ("richer-child-beside", "_settle_key", True), ("separate", "_clear_flags", False)],
)  # fmt: skip
def test_a_restatement_failing_part_way_is_finished_by_the_resend(
    ch_ingest, sqlite, name, step, runs
):
    """The batch refused part-way through the restatement and sent again as it was: the
    resend stores nothing new (its spans are stored), takes the restatement in first and
    finishes it; every figure as SQLite's given the batches once, and as polars."""
    slug = f"keeper-resent-{name}-{step.strip('_').replace('_', '-').lower()}-{int(runs)}"
    org, case = _new_org(ch_ingest, slug, name)
    engine, store = ch_ingest.engine, ch_ingest.store
    _write(ch_ingest, case.batches[:-1])
    _refused(store, engine, case.batches[-1], step, step_runs=runs)
    assert len(move_journal.pending(store, [org])) == 1
    assert to_clickhouse.write_spans(store, engine, case.batches[-1]) == 0
    sqlite_org = _on_sqlite(sqlite, slug, case.batches)
    _same_figures(store, org, sqlite, sqlite_org, case.counted)


def _org_figures(store, org: int) -> dict:
    """Everything the span store keeps of an org: rollups, trace totals, actors, spans."""
    return {
        "rollups": {t: _store_rollup(store, t, org).to_dicts() for t in GRAINS},
        "traces": _ch_trace_totals(store, org),
        "actors": _ch_actors(store, org),
        "spans": _ch_spans(store, org),
    }


def test_a_twin_restated_beside_a_late_call_under_a_stored_wrapper(ch_ingest, sqlite):
    """One batch brings a stored twin's richer copy and a late LLM call under a stored wrapper
    of the same org: both moves run, one after the other (the twin's, then the wrapper's),
    each figure as SQLite's and polars'."""
    org, case = _new_org(ch_ingest, "keeper-and-wrapper", "separate")
    main = case.batches[0][0]["project_id"]
    w = _wrapper(org, main, AT + timedelta(seconds=20), 500.0, 0.01)
    call = _call_under(w, 1, 400.0)
    batches = [case.batches[0] + [w], case.batches[1] + [call]]
    _write(ch_ingest, batches)
    sqlite_org = _on_sqlite(sqlite, "keeper-and-wrapper", batches)
    _same_figures(ch_ingest.store, org, sqlite, sqlite_org, [*case.counted, w, call])


def test_a_twin_restated_in_a_trace_across_a_month_boundary(ch_ingest, sqlite):
    """The trace's root and a tool span start in one month, the stored copy (the trace's last
    end) and its richer nested twin in the next: the copy set aside, the trace's last end is
    computed again from its other spans in both months' partitions (`move_traces._starts`:
    the trace totals' first and last start bound the read); one that missed the root's
    month would leave the copy's end standing. Each figure as SQLite's and polars'."""
    month = NOW.replace(day=1, hour=0, minute=0)  # the month's first start
    if NOW - month < timedelta(minutes=1):  # its first minute: the copies would start after NOW
        month = (month - timedelta(days=1)).replace(day=1)
    org, (main,) = make_org(ch_ingest.engine, "keeper-month", ("main",))
    root = span(org, main, month - timedelta(seconds=10), service_name="svc", operation="agent",
                duration_ms=2000.0, user_id="u-root")  # fmt: skip
    tool = child_of(root, month - timedelta(seconds=5), service_name="svc", operation="tool",
                    duration_ms=100.0, input_cost_usd=0.0002, output_cost_usd=0.0)  # fmt: skip
    stored = child_of(root, month + timedelta(seconds=1), **dict(SAME, duration_ms=60_000.0),
                      scope_name="agent.lib", model="gpt-4o", provider="openai",
                      input_cost_usd=0.001, output_cost_usd=0.001)  # fmt: skip
    later = child_of(stored, month + timedelta(seconds=1, milliseconds=5), **SAME,
                     scope_name="openai.sdk", model="gpt-4o-2024-08-06", provider="openai",
                     input_cost_usd=0.004, output_cost_usd=0.002, input_text="q",
                     output_text="a")  # fmt: skip
    batches = [[root, tool, stored], [later]]
    patch = pytest.MonkeyPatch()
    patch.setattr(dedup, "LOOKBACK", NOW - month + timedelta(hours=1))  # the boundary's twins
    try:
        _write(ch_ingest, batches)
        sqlite_org = _on_sqlite(sqlite, "keeper-month", batches)
    finally:
        patch.undo()
    _same_figures(ch_ingest.store, org, sqlite, sqlite_org, [root, tool, later], around=month)


def _late_totals_row(store, row: dict) -> None:
    """`row`'s trace totals row as its view writes it (the view's SELECT over the stored span),
    landing late: its insert's views still running when the move read the key."""
    partials = layout.trace_total_partials()
    keys = ("org_id", "project_id", "trace_id")
    select = [f"spans.{k} AS {k}" for k in keys] + [
        f"{p.select} AS {p.column.name}" for p in partials
    ]
    names = [*keys, *(p.column.name for p in partials)]
    store.client.command(
        f"INSERT INTO {store.table('trace_totals')} ({', '.join(names)}) "
        f"SELECT {', '.join(select)} FROM {store.table('spans')} AS spans "
        "WHERE spans.org_id = %(org)s AND spans.project_id = %(project)s "
        "AND spans.trace_id = %(trace)s AND spans.span_id = %(span)s "
        "GROUP BY spans.org_id, spans.project_id, spans.trace_id",
        parameters={"org": row["org_id"], "project": row["project_id"],
                    "trace": row["trace_id"], "span": row["span_id"]},
    )  # fmt: skip


def test_a_copy_set_aside_beside_spans_the_trace_totals_have_not_counted(ch_ingest, sqlite):
    """Two stored copies (`_two_pairs`), each its trace's only span the totals count, set aside
    by a batch that also brings a later span of each trace, the trace totals' view failing for
    it (`view_gaps.py`'s premise): each trace keeps a span, so neither key is emptied, though
    those spans start outside the totals' known starts (`move_traces._others_left`). One
    span's row lands late (its view finishing after the move read the key): after the org's
    next write, that trace's totals are its span's, as SQLite's and polars' (a delete of the
    key took that row with it). Then, the gap settled and the batch sent again (the top-up),
    every figure as SQLite's and polars': the other key, left adding up to no span, took no
    extreme, so its top-up is its span's alone."""
    engine, store = ch_ingest.engine, ch_ingest.store
    org, case = _new_org(ch_ingest, "keeper-gap", "two-pairs")
    first, second = case.batches[0][:2]  # the stored copies, each alone in its trace
    late = child_of(first, AT + timedelta(minutes=2), service_name="svc", operation="tool",
                    duration_ms=100.0, input_cost_usd=0.0003, output_cost_usd=0.0,
                    status="error")  # fmt: skip
    gap = child_of(second, AT + timedelta(minutes=3), service_name="svc", operation="tool",
                   duration_ms=50.0, input_cost_usd=0.0001, output_cost_usd=0.0)  # fmt: skip
    later = case.batches[1] + [late, gap]
    _write(ch_ingest, case.batches[:1])
    real = move_traces.trace_mutations

    def landed_late(store, org_id, items, wrappers):
        _late_totals_row(store, late)
        return real(store, org_id, items, wrappers)

    with pytest.MonkeyPatch.context() as patch, written_ago():
        patch.setattr(move_traces, "trace_mutations", landed_late)
        with _views_failing(store, ("trace_totals_mv",)):
            _write(ch_ingest, [later])
    main = first["project_id"]
    plain = span(org, main, AT + timedelta(minutes=4), service_name="svc", model="gpt-4o",
                 provider="openai", duration_ms=90.0, input_tokens=3, output_tokens=1)  # fmt: skip
    assert to_clickhouse.write_spans(store, engine, [plain]) == 1  # the org's next write
    batches = [case.batches[0], later, [plain]]
    sqlite_org = _on_sqlite(sqlite, "keeper-gap", batches)
    trace = late["trace_id"]
    (want,) = _polars(_reference([late]).drop("id").to_dicts())[1]
    assert [t for t in _ch_trace_totals(store, org) if t[0] == trace] == [want]
    listed = [t for t in _traces(store.engine, org) if t[0] == trace]
    assert listed == [t for t in _traces(sqlite, sqlite_org) if t[0] == trace] == [want[:5]]
    assert to_clickhouse.write_spans(store, engine, later) == 0  # the resend tops the gap up
    _same_figures(store, org, sqlite, sqlite_org, [*case.counted, late, gap, plain])
