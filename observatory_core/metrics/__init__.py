"""Metrics over spans: the catalog, the query, the raw and rollup paths, the planner."""
