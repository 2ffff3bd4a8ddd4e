"""Benchmarks: `make bench`. Figures go to bench/results.json and docs/benchmarks.md."""
