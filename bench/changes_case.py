"""What changed (issue 20 §2): one change split by a group-by, and the Overview's headline
contributors, on the demo data of one size (the main case's database, built if missing).

Figures: the median and p95 of repeated calls after a warm-up, "now" 17 minutes past the hour
at the end of the demo data (so both periods have ragged edges), as an admin of the demo org.
"""

from __future__ import annotations

import argparse
import gc
import json

from bench.case import LATE, demo_org_and_size, peak_rss_mb, timed
from bench.grid_case import ensure_database
from observatory_core.accounts.permissions import Role
from observatory_core.accounts.scope import Scope
from observatory_core.filters.spec import FilterSpec
from observatory_core.reports.whatchanged import headline_changes, what_changed
from observatory_core.storage.engine import get_engine


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", choices=["sqlite", "postgresql"], required=True)
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("--folder", default="bench/data")
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    engine = get_engine(ensure_database(args.db, args.size, args.folder))
    org_id, size = demo_org_and_size(engine)
    scope = Scope(org_id=org_id, role=Role.ADMIN)
    week = FilterSpec(relative="7d")
    start, end = week.window(LATE)
    ops = {
        # a sum by a dimension the rollups carry
        "changes_7d_cost_by_model": lambda: what_changed(
            engine, scope, "total_cost.sum", "model", week, now=LATE
        ),
        # a ratio (mix and rate) from rollups
        "changes_7d_error_rate_by_model": lambda: what_changed(
            engine, scope, "error_rate.avg", "model", week, now=LATE
        ),
        # an average by users: not in the rollups, so from raw spans, every user a group
        "changes_7d_latency_avg_by_user": lambda: what_changed(
            engine, scope, "duration_ms.avg", "user_id", week, now=LATE
        ),
        # the Overview's six headline changes by model: one pair of queries
        "changes_overview_headlines_7d": lambda: headline_changes(
            engine, scope, week, start, end, now=LATE
        ),
    }
    gc.collect()
    gc.freeze()
    out = []
    for name, fn in ops.items():
        median, p95 = timed(fn, args.runs)
        out.append(
            {
                "database": args.db,
                "size": size,
                "operation": name,
                "median_ms": median,
                "p95_ms": p95,
                "rows_per_s": None,
                "rows": None,
                "runs": args.runs,
                "peak_rss_mb": peak_rss_mb(),
            }
        )
    print(json.dumps(out))


if __name__ == "__main__":
    main()
