"""The dashboards the demo orgs start with: "Cost by team" and "Latency SLOs", written in the
JSON form an export downloads (the form a team keeps in version control), so a newcomer sees
what a dashboard is and has one to duplicate and edit. In the demo each project is a team."""

from __future__ import annotations

from sqlalchemy.engine import Engine

from observatory_core.dashboards.model import from_dict
from observatory_core.dashboards.store import create_dashboard
from observatory_core.demo.starter_rules import demo_orgs_with_names
from observatory_core.storage.schema import dashboards

STARTER_DASHBOARDS: tuple[dict, ...] = (
    {
        "version": 1,
        "name": "Cost by team",
        "description": "Where the money goes: spend per team (project), model and customer.",
        "filters": {"relative": "7d"},
        "columns": 3,
        "charts": [
            {"title": "Spend", "kind": "number", "series": "total_cost.sum"},
            {"title": "Requests", "kind": "number", "series": "request_count.count"},
            {"title": "Cost per request", "kind": "number", "series": "total_cost.avg"},
            {
                "title": "Daily spend by team",
                "kind": "area",
                "series": "total_cost.sum",
                "bucket": "1day",
                "group_by": ["project"],
                "width": 2,
            },
            {
                "title": "Spend by model",
                "kind": "pie",
                "series": "total_cost.sum",
                "group_by": ["model"],
                "top": 6,
            },
            {
                "title": "Spend by team and environment",
                "kind": "table",
                "series": "total_cost.sum",
                "bucket": "none",
                "group_by": ["project", "environment"],
                "top": 10,
                "width": 3,
            },
        ],
    },
    {
        "version": 1,
        "name": "Latency SLOs",
        "description": "p95 latency, time to first token and errors against the SLOs.",
        "filters": {"relative": "24h"},
        "columns": 2,
        "charts": [
            {"title": "p95 latency", "kind": "number", "series": "duration_ms.p95"},
            {"title": "Error rate", "kind": "number", "series": "error_rate.avg"},
            {
                "title": "p95 latency by provider",
                "kind": "line",
                "series": "duration_ms.p95",
                "group_by": ["provider"],
            },
            {
                "title": "p90 time to first token by provider",
                "kind": "line",
                "series": "ttft_ms.p90",
                "group_by": ["provider"],
            },
            {
                "title": "Errors by provider",
                "kind": "bar",
                "series": "error_count.count",
                "bucket": "1hour",
                "group_by": ["provider"],
            },
            {
                "title": "p99 latency by model",
                "kind": "bar",
                "series": "duration_ms.p99",
                "bucket": "none",
                "group_by": ["model"],
                "top": 8,
            },
        ],
    },
)


def install_starter_dashboards(engine: Engine) -> int:
    """Create the starter dashboards each demo org lacks; how many were created. Dashboards
    that exist (by name) are left alone, edited or not."""
    made = 0
    for scope, have in demo_orgs_with_names(engine, dashboards.c.name):
        for data in STARTER_DASHBOARDS:
            if data["name"] not in have:
                create_dashboard(engine, scope, from_dict(data))
                made += 1
    return made
