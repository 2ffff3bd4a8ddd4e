"""One evaluation cycle: observe every rule's value per group, step the state machines,
store the states, the transitions as events, and the webhooks to send.

Rules that share an org, filter, window and group-by are answered by one metrics query, so a
hundred rules cost far fewer than a hundred queries. Percentiles are exact for windows up to an
hour (raw spans); longer windows may use rollups (within the sketch's stated bound).
Sending webhooks is not part of the cycle: a slow receiver never delays evaluation.
Anomaly rules add one query per week of baseline for their batch: the same query over the same
window 1..N weeks back (`alerts/anomaly.py`), answered from the rollups where the engine can.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import case, func, select
from sqlalchemy.engine import Engine

from observatory_core.accounts.permissions import Role
from observatory_core.accounts.scope import Scope
from observatory_core.alerts import shared_windows as shared
from observatory_core.alerts.anomaly import Baseline, baseline_of, is_ratio, past_windows
from observatory_core.alerts.rules import ensure_system_rules, spec_of
from observatory_core.alerts.state import (
    FIRING,
    NO_GROUP,
    RESOLVED,
    GroupState,
    group_key,
    step,
)
from observatory_core.alerts.webhooks import body, queue_delivery
from observatory_core.filters.spec import FilterSpec
from observatory_core.metrics.catalog import Agg
from observatory_core.metrics.engine import run_metrics
from observatory_core.metrics.query import MetricQuery
from observatory_core.semantic.metrics import METRICS, Subject, sample_series
from observatory_core.storage.dialect import try_lock, unlock, upsert
from observatory_core.storage.schema import (
    alert_events,
    alert_rules,
    alert_states,
    export_jobs,
    ingest_counts,
    worker_heartbeats,
)
from observatory_core.storage.stores import store_for

log = logging.getLogger(__name__)

EXACT_UP_TO_S = 3600
_LOCK = 7_411_002
# Observations: rule id -> group key -> (value, request count)
Observed = dict[int, dict[str, tuple[float | None, int]]]
# Anomaly rules' baselines: rule id -> group key -> baseline (None: too few weeks count)
Baselines = dict[int, dict[str, Baseline | None]]


@dataclass(frozen=True)
class CycleReport:
    rules: int
    groups: int
    transitions: int
    queries: int
    seconds: float
    skipped: bool = False


def _observe_metric_rules(
    engine: Engine, rules: list[dict], now: datetime
) -> tuple[Observed, Baselines, int]:
    batches: dict[tuple, list[dict]] = defaultdict(list)
    for rule in rules:
        # trace metrics and span metrics never share a query (docs/metrics.md, Subjects)
        traces = _counts_traces(rule)
        batches[
            (rule["org_id"], rule["filter_json"], rule["window_s"], rule["group_by"], traces)
        ].append(rule)
    observed: Observed = {}
    baselines: Baselines = {}
    queries = 0
    if store_for(engine).shares_alert_windows:
        queries += _observe_together(engine, batches, now, observed)
    for (org_id, filter_json, window_s, group_by, _traces), members in batches.items():
        scope = Scope(org_id=org_id, role=Role.ADMIN, username="alerts")
        start = now - timedelta(seconds=window_s)
        observe = _batch_reader(engine, scope, filter_json, group_by, now)
        for rule, by_group in observe(members, start, now, exact=window_s <= EXACT_UP_TO_S).items():
            observed[rule] = by_group
        queries += 1
        anomalous = [r for r in members if r["kind"] == "anomaly"]
        if not anomalous:
            continue
        weeks = max(r["baseline_weeks"] for r in anomalous)
        past: dict[int, dict[str, list[float | None]]] = {r["id"]: {} for r in anomalous}
        for since, until in past_windows(start, now, weeks):
            answer = observe(anomalous, since, until, exact=False)
            queries += 1
            for rule in anomalous:  # weeks beyond a rule's own N do not count for it
                if until < now - timedelta(weeks=rule["baseline_weeks"]):
                    continue
                for key, (value, count) in answer[rule["id"]].items():
                    kept = value if count >= rule["min_requests"] else None
                    past[rule["id"]].setdefault(key, []).append(kept)
        for rule in anomalous:
            ratio = is_ratio(rule["series"])
            baselines[rule["id"]] = {
                key: baseline_of(values, ratio=ratio) for key, values in past[rule["id"]].items()
            }
    return observed, baselines, queries


def _observe_together(engine: Engine, batches: dict, now: datetime, observed: Observed) -> int:
    """The batches of one org, window and subject read from spans (exact windows, and longer
    ones the rollups cannot answer), each shaped as a set (`alerts/shared_windows.py`), read in
    one statement each; they leave `batches`. Anomaly rules' batches stay apart (their baseline
    weeks are read per batch). Statements run."""
    groups: dict[tuple, list] = defaultdict(list)
    for key, members in batches.items():
        org_id, filter_json, window_s, group_by, traces = key
        if traces or any(r["kind"] == "anomaly" for r in members):
            continue
        if window_s > EXACT_UP_TO_S and shared.rollups_answer(members, filter_json, group_by):
            continue  # read from rollups, apart
        shape = shared.shape_of(filter_json, group_by)
        subject = shared.subject_of(members)
        if shape is not None and subject is not None:
            groups[(org_id, window_s, subject)].append((key, shape, members))
    queries = 0
    dialect = store_for(engine).name
    for (org_id, window_s, subject), parts in groups.items():
        if len(parts) < 2:  # one batch: its own statement, as before
            continue
        start = now - timedelta(seconds=window_s)
        answer = shared.read_together(
            engine,
            org_id,
            subject,
            [(shape, members) for _, shape, members in parts],
            start,
            now,
            dialect,
            MAX_ALERT_GROUPS,
        )
        queries += 1
        if answer is None:  # a set past the groups' cap: read apart, folded as there
            continue
        for key, _, members in parts:
            for rule in members:
                observed[rule["id"]] = answer.get(rule["id"], {})
            del batches[key]
    return queries


def _batch_reader(engine: Engine, scope: Scope, filter_json: str, group_by, now: datetime):
    """Reads a batch's series over any window: rule id -> group key -> (value, requests)."""

    def read(members: list[dict], start: datetime, end: datetime, *, exact: bool) -> Observed:
        spec = FilterSpec.from_json(filter_json).replace(relative=None, start=start, end=end)
        # each rule's sample: the rows of its series' subject (requests for LLM-call figures)
        samples = {r["id"]: sample_series(r["series"]) for r in members}
        series = tuple(dict.fromkeys([*samples.values(), *(r["series"] for r in members)]))
        query = MetricQuery(
            series=series, filters=spec, bucket=None, group_by=(group_by,) if group_by else ()
        )
        result = run_metrics(
            engine,
            scope,
            query,
            now=now,
            force="raw" if exact else None,
            max_groups=MAX_ALERT_GROUPS,
        )
        observed: Observed = {r["id"]: {} for r in members}
        for rule in members:
            by_group = observed[rule["id"]]
            for row in result.frame.iter_rows(named=True):
                key = group_key(row[group_by]) if group_by else NO_GROUP
                value = row[rule["series"]]
                count = int(row[samples[rule["id"]]] or 0)
                by_group[key] = (None if value is None else float(value), count)
        return observed

    return read


# "One alert per" group: each group is judged alone up to this many (one total row each, so
# the answer stays small); beyond it the smallest groups are judged together as "(other)".
MAX_ALERT_GROUPS = 1000


def _observe_system(engine: Engine, rules: list[dict], now: datetime) -> Observed:
    observed: Observed = {}
    with engine.connect() as conn:
        for rule in rules:
            since = now - timedelta(seconds=rule["window_s"])
            if rule["system_kind"] == "export_failure_rate":
                j = export_jobs.c
                total, failed = conn.execute(
                    select(
                        func.count(),
                        func.coalesce(func.sum(case((j.status == "failed", 1), else_=0)), 0),
                    ).where(
                        j.org_id == rule["org_id"],
                        j.finished_at >= since,
                        j.status.in_(("completed", "failed", "expired")),
                    )
                ).one()
                observed[rule["id"]] = {NO_GROUP: (failed / total if total else None, int(total))}
            elif rule["system_kind"] == "ingest_rejections":
                c = ingest_counts.c
                accepted, rejected = conn.execute(
                    select(
                        func.coalesce(func.sum(c.accepted), 0),
                        func.coalesce(func.sum(c.rejected), 0),
                    ).where(
                        c.org_id == rule["org_id"],
                        c.bucket_start >= since.replace(second=0, microsecond=0),
                    )
                ).one()
                observed[rule["id"]] = {NO_GROUP: (float(rejected), int(accepted + rejected))}
            elif rule["system_kind"] == "worker_heartbeat":
                last = conn.execute(select(func.max(worker_heartbeats.c.seen_at))).scalar()
                silence = (now - last).total_seconds() if last is not None else None
                observed[rule["id"]] = {NO_GROUP: (silence, 0)}
    return observed


def _missing(series: str) -> float | None:
    """A group with no spans in the window: counts and sums are 0, other values unknown."""
    agg = series.rsplit(".", 1)[1]
    return 0.0 if agg in (Agg.COUNT.value, Agg.SUM.value) else None


def evaluate(
    engine: Engine,
    now: datetime | None = None,
    *,
    kinds: str = "all",
    spans: Engine | None = None,
) -> CycleReport:
    """Evaluate rules once. `kinds`: "all", or "heartbeat" (the watchdog in the web server
    that notices when no worker runs, which the worker itself cannot). Rules, states, events
    and the system rules' tables are `engine`'s (DATABASE_URL); the rules' spans and rollups
    are read from `spans` (the span store's when it is set: `storage/span_reads.py`), else
    from `engine`."""
    started = time.perf_counter()
    now = now or datetime.now(UTC)
    with engine.connect() as lock:
        if not try_lock(lock, _LOCK + (kinds == "heartbeat")):
            return CycleReport(0, 0, 0, 0, time.perf_counter() - started, skipped=True)
        try:
            return _cycle(engine, spans or engine, now, kinds, started)
        finally:
            unlock(lock, _LOCK + (kinds == "heartbeat"))


def _counts_traces(rule: dict) -> bool:
    return METRICS[rule["series"].split(".")[0]].subject is Subject.TRACES


def _cycle(engine: Engine, spans: Engine, now: datetime, kinds: str, started: float) -> CycleReport:
    with engine.begin() as conn:
        ensure_system_rules(conn, now)
        rules = [dict(r) for r in conn.execute(select(alert_rules)).mappings()]
        states = {
            (r["rule_id"], r["group_key"]): GroupState(
                r["state"], r["since"], r["last_breach_at"], r["last_value"], r["last_requests"]
            )
            for r in conn.execute(select(alert_states)).mappings()
        }
    heartbeat = [r for r in rules if r["system_kind"] == "worker_heartbeat"]
    baselines: Baselines = {}
    if kinds == "heartbeat":
        rules, queries = heartbeat, 0
        observed = _observe_system(engine, heartbeat, now)
    else:
        rules = [r for r in rules if r["system_kind"] != "worker_heartbeat"]
        observed, baselines, queries = _observe_metric_rules(
            spans, [r for r in rules if not r["system_kind"]], now
        )
        observed.update(_observe_system(engine, [r for r in rules if r["system_kind"]], now))
    new_states, events = [], []
    for rule in rules:
        spec = spec_of(rule)
        groups = dict(observed.get(rule["id"], {}))
        for rule_id, key in states:
            if rule_id == rule["id"] and key not in groups:
                groups[key] = (_missing(rule["series"]), 0)
        if not rule["group_by"] and NO_GROUP not in groups:
            groups[NO_GROUP] = (_missing(rule["series"]), 0)
        for key, (value, requests) in groups.items():
            baseline = baselines.get(rule["id"], {}).get(key)
            state, transition = step(
                states.get((rule["id"], key)), value, requests, spec, now, baseline
            )
            new_states.append((rule, key, state))
            if transition:
                events.append((rule, key, transition, value, baseline))
    _store(engine, now, new_states, events)
    return CycleReport(
        len(rules), len(new_states), len(events), queries, time.perf_counter() - started
    )


def _store(engine: Engine, now: datetime, new_states, events) -> None:
    with engine.begin() as conn:
        if new_states:
            rows = [
                {
                    "rule_id": rule["id"],
                    "group_key": key,
                    "state": s.state,
                    "since": s.since,
                    "last_breach_at": s.last_breach_at,
                    "last_value": s.last_value,
                    "last_requests": s.last_requests,
                    "evaluated_at": now,
                }
                for rule, key, s in new_states
            ]
            stmt = upsert(conn, alert_states)
            conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=[alert_states.c.rule_id, alert_states.c.group_key],
                    set_={
                        c: stmt.excluded[c]
                        for c in (
                            "state",
                            "since",
                            "last_breach_at",
                            "last_value",
                            "last_requests",
                            "evaluated_at",
                        )
                    },
                ),
                rows,
            )
        for rule, key, (before, after), value, baseline in events:
            # an anomaly rule's event keeps what was usual then in place of a threshold
            usual = baseline.median if baseline is not None else None
            against = usual if rule["kind"] == "anomaly" else rule["threshold"]
            event_id = conn.execute(
                alert_events.insert().values(
                    org_id=rule["org_id"],
                    rule_id=rule["id"],
                    group_key=key,
                    from_state=before,
                    to_state=after,
                    value=value,
                    threshold=against,
                    at=now,
                )
            ).inserted_primary_key[0]
            muted = rule["muted_until"] is not None and rule["muted_until"] > now
            if rule["webhook_url"] and after in (FIRING, RESOLVED) and not muted:
                queue_delivery(
                    conn,
                    rule["org_id"],
                    rule["webhook_url"],
                    body(rule, key, after, value, now, usual),
                    now,
                    rule_id=rule["id"],
                    event_id=event_id,
                )
