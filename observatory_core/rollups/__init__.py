"""Rollup tables: partial aggregates of spans at 1 minute, 1 hour and 1 day."""
