"""One alert evaluation cycle with 100 rules on the demo data (PostgreSQL).

The rules are a realistic mix: p50-p99 latency, error and success rates, cost sums (budgets),
token sums and averages, request counts; windows from 5 minutes to 1 day; whole-org rules and
rules filtered to a model or an environment; some with one alert per model. The clock is the
end of the demo data, so every window holds spans. Figures: the cycle's median and p95 over
repeated cycles after a first one, and how many metrics queries a cycle ran.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics

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


def make_rules(engine, org_id: int, count: int) -> None:
    rng = random.Random(11)
    scope = Scope(org_id, Role.ADMIN, username="bench")
    with engine.begin() as conn:
        conn.execute(delete(alert_rules).where(alert_rules.c.org_id == org_id))
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--size", type=int, help="unused: the spans already there are counted")
    parser.add_argument("--rules", type=int, default=100)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    engine = get_engine(args.url)
    org_id, size = demo_org_and_size(engine)
    make_rules(engine, org_id, args.rules)
    evaluate(engine, END)  # creates the system rules and the first states
    seconds, queries = [], 0
    for _ in range(args.runs):
        report = evaluate(engine, END)
        seconds.append(report.seconds * 1000)
        queries = report.queries
    seconds.sort()
    print(
        json.dumps(
            [
                {
                    "operation": f"alerts_cycle_{args.rules}_rules",
                    "database": "postgresql",
                    "size": size,
                    "median_ms": statistics.median(seconds),
                    "p95_ms": seconds[min(len(seconds) - 1, int(0.95 * len(seconds)))],
                    "rows_per_s": None,
                    "queries_per_cycle": queries,
                    "groups": report.groups,
                    "runs": args.runs,
                    "peak_rss_mb": None,
                }
            ]
        )
    )


if __name__ == "__main__":
    main()
