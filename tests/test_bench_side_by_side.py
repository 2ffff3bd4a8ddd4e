"""docs/benchmarks.md's table of issue 17's figures (bench/doc_side_by_side.py): each store's
figure in its column, and 'same answer' only where both stores counted the same."""

from __future__ import annotations

from bench.clickhouse_app_case import PREFIX
from bench.doc_side_by_side import side_by_side_section


def _entry(operation: str, db: str, size: int, check, median=10.0) -> dict:
    return {
        "operation": operation,
        "database": db,
        "size": size,
        "median_ms": median,
        "p95_ms": median * 2,
        "rows_per_s": None,
        "peak_rss_mb": 100.0 if db == "chdb" else 50.0,
        "check": check,
    }


def _row(lines: list[str], label: str) -> list[str]:
    found = [line for line in lines if line.startswith(f"| {label} |")]
    assert len(found) == 1, lines
    return [cell.strip() for cell in found[0].strip("|").split("|")]


def test_each_store_in_its_column_and_the_checks_compared():
    page, series = (
        PREFIX + "explorer_first_page_24h_by_time",
        PREFIX + "metrics_30d_hourly_by_model",
    )
    entries = [
        _entry(page, "chdb", 1000, [50, "abc"], median=30.0),
        _entry(page, "postgresql", 1000, [50, "abc"], median=2.0),
        _entry(series, "chdb", 1000, [420, 1.5]),
        _entry(series, "postgresql", 1000, [371, 1.5]),
    ]
    lines = side_by_side_section(entries, "now")
    assert "| operation | target | chdb 1,000 | postgresql 1,000 | same answer |" in lines
    assert _row(lines, "`explorer_first_page_24h_by_time`") == [
        "`explorer_first_page_24h_by_time`",
        "p95 <= 50 ms",
        "30.0 / 60.0 ms",
        "2.0 / 4.0 ms",
        "yes",
    ]
    assert _row(lines, "`metrics_30d_hourly_by_model`")[-1] == "no: [420, 1.5] / [371, 1.5]"
    # a figure neither store measured is shown as missing, not as equal
    assert _row(lines, "`overview_7d_with_comparison`")[2:] == ["—", "—", "—"]
    assert _row(lines, "peak RSS of the reading process")[2:4] == ["100 MB", "50 MB"]


def test_nothing_without_the_cases_figures():
    assert side_by_side_section([_entry("demo_load", "postgresql", 1000, None)], "now") == []
