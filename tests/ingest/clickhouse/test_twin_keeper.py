"""Which copy of a call sent twice counts, when the second copy arrives in a later batch: the
rule of `ingest/dedup.pick_keeper` (the richer content, then the stored one, ...), the counted
span taking from its twin the model, provider and, when unpriced, the cost it lacks
(`dedup._take`), on SQLite and on the ClickHouse span store alike (there a stored copy that
stops counting or takes fields is restated after the batch's insert:
`ingest/span_store_twins.py`, `storage/clickhouse/wrapper_moves.py`).

Each case compares the span store with SQLite given the same batches, and both with polars
over the rows the rule counts (written out by hand): the figures by model through the raw
path and the rollups, the error counts, every rollup grain, the trace totals (the list's
traces mode), the hour's distinct users, and which `spans` row carries `duplicate_of`
(`twin_figures.py`). A twin restated beside other spans of its trace or org:
`test_twin_keeper_traces.py`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import pytest

from observatory_core.ingest import to_clickhouse
from observatory_core.storage.clickhouse import wrapper_move_journal as move_journal
from observatory_core.storage.clickhouse import wrapper_move_plan as planning
from observatory_core.storage.clickhouse import wrapper_moves
from tests.helpers import child_of, make_org, span
from tests.ingest.clickhouse.test_late_llm_call_resends import _Failed, _refused, _refused_with
from tests.ingest.clickhouse.test_late_llm_calls import _extremes_applied
from tests.ingest.clickhouse.twin_figures import (
    AT,
    _as,
    _on_sqlite,
    _org_figures,
    _same_figures,
    _write,
    new_sqlite,
)

SAME = dict(service_name="svc", input_tokens=120, output_tokens=30, duration_ms=800.0)


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
    engine = new_sqlite(tmp_path_factory, "keeper-sqlite")
    yield engine
    engine.dispose()


def _new_org(ch_ingest, slug: str, name: str) -> tuple[int, Case]:
    """A new org of the span store and the case's rows for it, the `_beside` spans in its
    first batch."""
    org, (main,) = make_org(ch_ingest.engine, slug, ("main",))
    case = CASES[name](org, main)
    beside = _beside(org, main)
    return org, Case([case.batches[0] + beside, *case.batches[1:]], case.counted + beside)


@pytest.mark.parametrize("name", list(CASES))
def test_the_span_store_counts_the_copy_the_rule_keeps(ch_ingest, sqlite, first_batches, name):
    """The later copy in a batch of its own: each figure as SQLite's and polars'; another org
    holding the same stored copy (no later twin of its own) keeps its rollups, trace totals,
    actors and spans as they were; the later batch sent again stores nothing new and changes
    no figure (its copy is found stored, so it pairs with nothing). One restatement per case
    for the three checks: each costs seconds of the engine's mutations."""
    engine, store = ch_ingest.engine, ch_ingest.store
    other, _ = first_batches[f"keeper-other-{name}"]  # its copy of the stored batch
    org, case = first_batches[f"keeper-{name}"]
    _write(ch_ingest, case.batches[1:-1])
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


ONE_BATCH = [n for n in CASES if n not in ("chain", "nested-twice")]


@pytest.mark.parametrize("name", ONE_BATCH)
def test_twins_of_one_batch_count_the_copy_the_rule_keeps(ch_ingest, sqlite, first_batches, name):
    """Both copies in one batch (the rule among new spans, as before): as SQLite, as polars.
    (Three copies in one batch pair two of them, on every store: not the chain's answer.)"""
    org, case = first_batches[f"keeper-one-{name}"]  # its batches written as one
    batch = [r for b in case.batches for r in b]
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
RESENT = [("nested", "_insert", False), ("nested", "_insert", True),
          ("richer-child-beside", "_settle_key", True), ("separate", "_clear_flags", False)]  # fmt: skip


def _slug(kind: str, name: str, step: str, runs: bool) -> str:
    return f"keeper-{kind}-{name}-{step.strip('_').replace('_', '-').lower()}-{int(runs)}"


@pytest.fixture(scope="module")
def first_batches(ch_ingest) -> dict[str, tuple[int, Case]]:
    """Each test's org (by its slug) and case, every case's first batch (the counts test's
    other org's copy of it, and the one-batch test's batches whole) written in one batch of
    the orgs' together: one insert, and its views, for the module's 35 orgs, not one each
    (each org's rows are judged by its own: `writes.org_turn`, the twin rule per org)."""
    engine = ch_ingest.engine
    orgs: dict[str, tuple[int, Case]] = {}
    for name in CASES:
        orgs[f"keeper-{name}"] = _new_org(ch_ingest, f"keeper-{name}", name)
        other, (other_main,) = make_org(engine, f"keeper-other-{name}", ("main",))
        mine = _as(orgs[f"keeper-{name}"][1].batches[0], other, other_main)
        orgs[f"keeper-other-{name}"] = (other, Case([mine], []))
    for name in ONE_BATCH:
        org, case = _new_org(ch_ingest, f"keeper-one-{name}", name)
        orgs[f"keeper-one-{name}"] = (org, case)
    for kind, cases in (("fail", FAILURES), ("resent", RESENT)):
        for name, step, runs in cases:
            slug = _slug(kind, name, step, runs)
            orgs[slug] = _new_org(ch_ingest, slug, name)
    batch = []
    for slug, (_, case) in orgs.items():
        whole = slug.startswith("keeper-one-")
        batch += [r for b in case.batches for r in b] if whole else case.batches[0]
    _write(ch_ingest, [batch])
    return orgs


@pytest.mark.parametrize(("name", "step", "runs"), FAILURES)
def test_a_restatement_failing_part_way_is_finished_by_the_orgs_next_batch(
    ch_ingest, sqlite, first_batches, name, step, runs
):
    """The store fails part-way through the stored twin's restatement: the batch is refused
    (503), its spans stored, the restatement pending; the org's next batch (another call)
    finishes it without adding anything twice: every figure as SQLite's given the same
    batches, and as polars."""
    slug = _slug("fail", name, step, runs)
    org, case = first_batches[slug]
    engine, store = ch_ingest.engine, ch_ingest.store
    _write(ch_ingest, case.batches[1:-1])
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


@pytest.mark.parametrize(("name", "step", "runs"), RESENT)
def test_a_restatement_failing_part_way_is_finished_by_the_resend(
    ch_ingest, sqlite, first_batches, name, step, runs
):
    """The batch refused part-way through the restatement and sent again as it was: the
    resend stores nothing new (its spans are stored), takes the restatement in first and
    finishes it; every figure as SQLite's given the batches once, and as polars."""
    slug = _slug("resent", name, step, runs)
    org, case = first_batches[slug]
    engine, store = ch_ingest.engine, ch_ingest.store
    _write(ch_ingest, case.batches[1:-1])
    _refused(store, engine, case.batches[-1], step, step_runs=runs)
    assert len(move_journal.pending(store, [org])) == 1
    assert to_clickhouse.write_spans(store, engine, case.batches[-1]) == 0
    sqlite_org = _on_sqlite(sqlite, slug, case.batches)
    _same_figures(store, org, sqlite, sqlite_org, case.counted)
