"""How often a rule would have fired over the last days, before it is saved.

The rule's series is read per bucket (the largest bucket size not longer than its window,
1 minute to 1 day) and the same state machine steps through the buckets in time order, so
pending and keep-firing periods count as they will live. An anomaly rule's series is read N
weeks further back, and each bucket is judged against the same bucket in each of the N weeks
before it (`alerts/anomaly.py`, `with_baseline`): the frame carries that band.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import polars as pl
from sqlalchemy.engine import Engine

from observatory_core.accounts.permissions import Permission
from observatory_core.accounts.scope import Scope
from observatory_core.alerts.anomaly import WEEK, Baseline, is_ratio, with_baseline
from observatory_core.alerts.rules import RuleSpec
from observatory_core.alerts.state import FIRING, step
from observatory_core.metrics.catalog import BUCKETS, MAX_RANGE_DAYS
from observatory_core.metrics.engine import run_metrics
from observatory_core.metrics.query import MetricQuery
from observatory_core.semantic.metrics import sample_series


@dataclass(frozen=True)
class Backtest:
    frame: pl.DataFrame  # bucket, group, value, requests, firing (anomaly: median, low, high)
    bucket: str
    fired: int  # times it would have started firing
    firing_share: float  # share of buckets (all groups) spent firing


def bucket_for(window_s: int) -> str:
    fitting = [name for name, seconds in BUCKETS.items() if seconds <= window_s]
    return fitting[-1] if fitting else "1min"


def _read(
    engine, scope, rule: RuleSpec, bucket: str, start: datetime, end: datetime, now
) -> pl.DataFrame:
    """The series per bucket, in chunks the engine allows for this bucket size."""
    chunk = timedelta(days=MAX_RANGE_DAYS[bucket])
    frames = []
    at = start
    while at < end:
        upto = min(end, at + chunk)
        spec = rule.filters.replace(relative=None, start=at, end=upto)
        query = MetricQuery(
            series=tuple(dict.fromkeys((rule.series, sample_series(rule.series)))),
            filters=spec,
            bucket=bucket,
            group_by=(rule.group_by,) if rule.group_by else (),
        )
        frames.append(run_metrics(engine, scope, query, now=now).frame)
        at = upto
    return pl.concat(frames, how="vertical_relaxed") if frames else pl.DataFrame()


@dataclass(frozen=True)
class Transition:
    group: str
    before: str
    after: str
    value: float | None
    at: datetime
    against: float | None = None  # the threshold, or an anomaly rule's baseline median


def replay(
    engine: Engine, scope: Scope, rule: RuleSpec, *, days: float = 7, now: datetime | None = None
) -> tuple[pl.DataFrame, str, list[Transition], dict[str, object]]:
    """The rule stepped through the past `days`, bucket by bucket: the frame (with `firing`),
    the bucket size, every transition and each group's last state."""
    scope.require(Permission.METRICS_READ)
    now = now or datetime.now(UTC)
    bucket = bucket_for(rule.window_s)
    seconds = BUCKETS[bucket]
    # Whole buckets only, at both ends: a bucket cut short (`metrics.partial`) would step the
    # state machine with part of a window's requests as if it were all of them.
    end = datetime.fromtimestamp(now.timestamp() // seconds * seconds, UTC)
    start = datetime.fromtimestamp(
        -((end - timedelta(days=days)).timestamp() // -seconds) * seconds, UTC
    )
    since = start - rule.baseline_weeks * WEEK if rule.anomaly else start
    frame = _read(engine, scope, rule, bucket, since, end, now)
    group = rule.group_by
    frame = frame.with_columns(
        pl.col(rule.series).alias("value"), pl.col(sample_series(rule.series)).alias("requests")
    ).with_columns(
        (pl.col(group).cast(pl.String).fill_null("(none)") if group else pl.lit("")).alias("group")
    )
    frame = frame.select("bucket", "group", "value", pl.col("requests").fill_null(0)).sort(
        "group", "bucket"
    )
    if rule.anomaly:
        frame = with_baseline(
            frame,
            weeks=rule.baseline_weeks,
            min_requests=rule.min_requests,
            sensitivity=rule.sensitivity,
            ratio=is_ratio(rule.series),
        ).filter(pl.col("bucket") >= start)
    firing, transitions = [], []
    states: dict[str, object] = {}
    for row in frame.iter_rows(named=True):
        at = row["bucket"] + timedelta(seconds=seconds)
        baseline = _baseline(row) if rule.anomaly else None
        state, transition = step(
            states.get(row["group"]), row["value"], row["requests"], rule, at, baseline
        )
        states[row["group"]] = state
        if transition is not None:
            against = (baseline.median if baseline else None) if rule.anomaly else rule.threshold
            transitions.append(Transition(row["group"], *transition, row["value"], at, against))
        firing.append(state.state == FIRING)
    frame = frame.with_columns(pl.Series("firing", firing, dtype=pl.Boolean))
    return frame, bucket, transitions, states


def _baseline(row: dict) -> Baseline | None:
    if row["median"] is None:
        return None
    return Baseline(row["median"], row["spread"], 0)


def backtest(
    engine: Engine, scope: Scope, rule: RuleSpec, *, days: int = 7, now: datetime | None = None
) -> Backtest:
    frame, bucket, transitions, _ = replay(engine, scope, rule, days=days, now=now)
    fired = sum(t.after == FIRING for t in transitions)
    firing = frame["firing"].to_list()
    share = sum(firing) / len(firing) if firing else 0.0
    return Backtest(frame, bucket, fired, share)
