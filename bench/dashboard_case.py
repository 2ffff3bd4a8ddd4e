"""Custom dashboards (issue 20 part 1): a 6-chart dashboard's numbers and figures, through the
code the Dashboards page runs (`dashboards.render.load_dashboard`, then
`ui.dashboards_view.figure` or the table of each chart), uncached, on the main case's database
of `--size` spans (`--days 30 --seed 7`; built if missing, only read). Run it before the grid,
which declares user_id there (more rollup rows).

The starter dashboards: "Cost by team" (three numbers with their previous period, a stacked
area by team, a pie by model, a table by team and environment) over its own 7 days and over
30 days, and "Latency SLOs" (two numbers, p95 and p90 TTFT lines by provider, errors per hour
and p99 by model) over its own 24 hours. Target at 1M spans on PostgreSQL: the page's server
side of a 6-chart dashboard well within the 1.5 s a person waits for it in the browser.
"""

from __future__ import annotations

import argparse
import json

from bench.case import END, demo_org_and_size, timed_entries
from bench.grid_case import ensure_database
from observatory_core.accounts.permissions import Role
from observatory_core.accounts.scope import Scope
from observatory_core.dashboards.model import from_dict
from observatory_core.dashboards.render import load_dashboard
from observatory_core.demo.starter_dashboards import STARTER_DASHBOARDS
from observatory_core.filters.spec import FilterSpec
from observatory_core.metrics.engine import run_metrics
from observatory_core.storage.engine import get_engine
from observatory_core.ui import dashboards_view, metrics_view

RUNS = 7


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", choices=("sqlite", "postgresql"), required=True)
    parser.add_argument("--size", type=int, required=True)
    args = parser.parse_args()
    engine = get_engine(ensure_database(args.db, args.size, "bench/data"))
    org_id, size = demo_org_and_size(engine)
    scope = Scope(org_id, Role.ADMIN, username="bench")

    def run(query, top):
        return run_metrics(engine, scope, query, now=END, max_groups=top)

    def render(board, spec: FilterSpec) -> None:
        """What the page computes for one view of the dashboard, short of sending it."""
        for data in load_dashboard(run, scope, board, spec):
            assert data.result is not None, (data.chart.title, data.problem)
            if data.chart.kind == "table":
                metrics_view.shown_table(data.result)
            elif data.chart.kind != "number":
                dashboards_view.figure(data)

    cost, latency = (from_dict(d) for d in STARTER_DASHBOARDS)
    assert len(cost.charts) == len(latency.charts) == 6
    cases = {
        "dashboard_cost_by_team_7d": (cost, cost.filters),
        "dashboard_cost_by_team_30d": (cost, FilterSpec(relative="30d")),
        "dashboard_latency_slos_24h": (latency, latency.filters),
    }
    runs = {n: (lambda b=b, s=s: render(b, s)) for n, (b, s) in cases.items()}
    entries = timed_entries(runs, args.db, size, RUNS)
    engine.dispose()
    print(json.dumps(entries))


if __name__ == "__main__":
    main()
