"""The benchmark families `BENCH_ONLY=<family>` runs alone, and which family each figure of
bench/results.json belongs to (by its operation's prefix)."""

from __future__ import annotations

# Families that `BENCH_ONLY=<family>` runs alone against the databases of an earlier run.
# Each with the prefix of its operations.
FAMILIES = {
    "exports": "export_",
    "ingest": "ingest_",
    "alerts": "alerts_",
    "api": "api_",
    "grid": "grid_",
    "remap": "remap_",
    "changes": "changes_",
    "people": "people_",
    "sketch": "sketch_",
    "dims": "dims_",
    "retention": "retention_",
    "dashboard": "dashboard_",
    "dashboard_ui": "dashboard_ui_",
    "clickhouse": "clickhouse_",  # on chDB (database "chdb"), a folder of its own
}


# `BENCH_ONLY=queries`: only the main case (bench/case.py), at BENCH_SIZES on BENCH_DATABASES.
QUERIES = "queries"


def family(operation: str) -> str | None:
    """The family whose prefix claims `operation` (the longest: `dashboard_ui_` over
    `dashboard_`); None for the main case's."""
    claims = [(len(prefix), f) for f, prefix in FAMILIES.items() if operation.startswith(prefix)]
    return max(claims)[1] if claims else None


def main_case(entry: dict) -> bool:
    """A figure of the main case: one no other family's prefix claims."""
    return family(entry["operation"]) is None
