"""One alert evaluation cycle with 100 rules on the demo data (PostgreSQL).

The rules are a realistic mix: p50-p99 latency, error and success rates, cost sums (budgets),
token sums and averages, request counts; windows from 5 minutes to 1 day; whole-org rules and
rules filtered to a model or an environment; some with one alert per model. The clock is the
end of the demo data, so every window holds spans. Figures: the cycle's median and p95 over
repeated cycles after a first one, and how many metrics queries a cycle ran.

Then the same for anomaly rules alone (`alerts_anomaly_cycle_*`, issue 20): rules of the same
series compared with the same window in each of the last 4 weeks (the demo data spans 30 days,
so every baseline week holds spans); each batch of rules runs its window's query and one per
week of baseline.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
from datetime import timedelta

from sqlalchemy import delete

from bench.case import END, demo_org_and_size
from observatory_core.accounts.permissions import Role
from observatory_core.accounts.scope import Scope
from observatory_core.alerts.evaluate import evaluate
from observatory_core.alerts.rules import build_rule, create_rule
from observatory_core.filters.spec import FilterSpec
from observatory_core.storage.engine import get_engine
from observatory_core.storage.schema import alert_rules

SERIES = (
    ("duration_ms.p95", ">", 4000),
    ("duration_ms.p99", ">", 9000),
    ("duration_ms.p50", ">", 1500),
    ("ttft_ms.p90", ">", 1200),
    ("error_rate.avg", ">", 0.05),
    ("success_rate.avg", "<", 0.9),
    ("total_cost.sum", ">", 50),
    ("output_tokens.avg", ">", 900),
    ("total_tokens.sum", ">", 1_000_000),
    ("request_count.count", "<", 10),
)
WINDOWS = (300, 900, 3600, 86400)
MODELS = ("gpt-4o", "gpt-4o-mini", "claude-sonnet-4-5", "gemini-2.5-flash")


def _without_rules(engine, org_id: int) -> Scope:
    """Delete the org's rules (a case starts from none); the scope to create its own."""
    with engine.begin() as conn:
        conn.execute(delete(alert_rules).where(alert_rules.c.org_id == org_id))
    return Scope(org_id, Role.ADMIN, username="bench")


def make_rules(engine, org_id: int, count: int) -> None:
    rng = random.Random(11)
    scope = _without_rules(engine, org_id)
    for i in range(count):
        series, comparator, threshold = SERIES[i % len(SERIES)]
        kind = rng.random()
        filters = FilterSpec(relative=None)
        if kind < 0.3:
            filters = FilterSpec(relative=None, models=(rng.choice(MODELS),))
        elif kind < 0.45:
            filters = FilterSpec(relative=None, environments=("production",))
        rule = build_rule(
            name=f"bench rule {i}",
            series=series,
            comparator=comparator,
            threshold=threshold,
            window_s=rng.choice(WINDOWS),
            filters=filters,
            group_by="model" if rng.random() < 0.25 else None,
            min_requests=5,
            pending_s=rng.choice((0, 60, 300)),
        )
        create_rule(engine, scope, rule, now=END)


def make_anomaly_rules(engine, org_id: int, count: int) -> None:
    """`count` anomaly rules: the series above, windows of 5 minutes to 1 hour, a third with one
    alert per model, 4 weeks of baseline."""
    rng = random.Random(12)
    scope = _without_rules(engine, org_id)
    for i in range(count):
        series, _, _ = SERIES[i % len(SERIES)]
        rule = build_rule(
            name=f"bench anomaly {i}",
            series=series,
            comparator=">",
            threshold=0,
            window_s=rng.choice((300, 900, 3600)),
            group_by="model" if i % 3 == 0 else None,
            min_requests=5,
            kind="anomaly",
            baseline_weeks=4,
            direction="both",
        )
        create_rule(engine, scope, rule, now=END)


def cycles(engine, runs: int, spans=None, step_s: int = 0) -> tuple[list[float], object]:
    """Milliseconds of `runs` cycles after a first one (sorted), and the last report; the rules'
    spans read from `spans` (the span store's engine) when given, as the alert worker does.
    Cycle k runs `step_s` * k seconds after the first (0: all at the demo data's end)."""
    evaluate(engine, END, spans=spans)  # creates the system rules and the first states
    seconds, report = [], None
    for k in range(1, runs + 1):
        report = evaluate(engine, END + timedelta(seconds=step_s * k), spans=spans)
        # a skipped cycle (another evaluator held the turn) read nothing: not a timing
        assert not report.skipped, "the alert cycle was skipped: another evaluator is running"
        seconds.append(report.seconds * 1000)
    return sorted(seconds), report


def entry(operation: str, size: int, seconds: list[float], report, runs: int) -> dict:
    return {
        "operation": operation,
        "database": "postgresql",
        "size": size,
        "median_ms": statistics.median(seconds),
        "p95_ms": seconds[min(len(seconds) - 1, int(0.95 * len(seconds)))],
        "rows_per_s": None,
        "queries_per_cycle": report.queries,
        "groups": report.groups,
        "runs": runs,
        "peak_rss_mb": None,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--size", type=int, help="unused: the spans already there are counted")
    parser.add_argument("--rules", type=int, default=100)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--anomaly-rules", type=int, default=10)
    args = parser.parse_args()
    engine = get_engine(args.url)
    org_id, size = demo_org_and_size(engine)
    make_rules(engine, org_id, args.rules)
    seconds, report = cycles(engine, args.runs)
    figures = [entry(f"alerts_cycle_{args.rules}_rules", size, seconds, report, args.runs)]
    make_anomaly_rules(engine, org_id, args.anomaly_rules)
    seconds, report = cycles(engine, args.runs)
    figures.append(
        entry(f"alerts_anomaly_cycle_{args.anomaly_rules}_rules", size, seconds, report, args.runs)
    )
    make_rules(engine, org_id, args.rules)  # leave the database as the other cases expect it
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
