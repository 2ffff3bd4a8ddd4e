"""docs/benchmarks.md's table of issue 17's figures (bench/doc_side_by_side.py): each store's
figure in its column, and 'same answer' only where both stores counted the same."""

from __future__ import annotations

import hashlib

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


def test_each_chdb_size_in_its_column_and_the_largest_pg_size_compared():
    page = PREFIX + "explorer_first_page_24h_by_time"
    entries = [
        _entry(page, "chdb", 1000, [50, "small"]),
        _entry(page, "chdb", 5000, [50, "large"]),
        _entry(page, "postgresql", 5000, [50, "large"], median=2.0),
    ]
    lines = side_by_side_section(entries, "now")
    assert "| operation | target | chdb 1,000 | chdb 5,000 | postgresql 5,000 | same answer |" in (
        lines
    )
    # compared at PostgreSQL's size: chDB 1,000's other check does not count
    assert _row(lines, "`explorer_first_page_24h_by_time`")[2:] == [
        "10.0 / 20.0 ms",
        "10.0 / 20.0 ms",
        "2.0 / 4.0 ms",
        "yes",
    ]
    entries[1]["check"] = [50, "other"]
    lines = side_by_side_section(entries, "now")
    assert (
        _row(lines, "`explorer_first_page_24h_by_time`")[-1] == "no: [50, 'other'] / [50, 'large']"
    )


def test_empty_answers_on_both_stores_are_not_the_same_answer():
    trace, page, overview, export = (
        PREFIX + "explorer_open_50_span_trace",
        PREFIX + "explorer_first_page_24h_by_time",
        PREFIX + "overview_7d_with_comparison",
        PREFIX + "export_csv_gzip",
    )
    empty_page = [0, hashlib.sha1(b"").hexdigest()[:12]]
    no_requests = {"requests": [0, 0], "traces": [0, 0], "tokens": [0, 0]}
    entries = [
        *(_entry(trace, db, 1000, None) for db in ("chdb", "postgresql")),
        *(_entry(page, db, 1000, empty_page) for db in ("chdb", "postgresql")),
        *(_entry(overview, db, 1000, no_requests) for db in ("chdb", "postgresql")),
        *(
            {**_entry(export, db, 1000, 0), "rows": 0, "rows_per_s": 0}
            for db in ("chdb", "postgresql")
        ),
    ]
    lines = side_by_side_section(entries, "now")
    for label in (
        "`explorer_open_50_span_trace`",
        "`explorer_first_page_24h_by_time`",
        "`overview_7d_with_comparison`",
        "export CSV.gz, every span of the org",
    ):
        assert _row(lines, label)[-1] == "—", label


def test_the_database_servers_memory_in_a_row_of_its_own():
    page = PREFIX + "explorer_first_page_24h_by_time"
    entries = [
        _entry(page, "chdb", 1000, [50, "abc"]),
        {**_entry(page, "postgresql", 1000, [50, "abc"]), "server_peak_rss_mb": 300.0},
    ]
    lines = side_by_side_section(entries, "now")
    row = _row(
        lines, "peak RSS of the database server's backends (chDB: inside the reading process)"
    )
    assert row[2:4] == ["—", "300 MB"]


def test_the_runs_said_are_the_runs_measured_per_column():
    """BENCH_CHDB_RUNS may give each size its own number of runs: the text says each."""
    op = "clickhouse_app_explorer_first_page_24h_by_time"
    entries = [
        {**_entry(op, "chdb", 1_000_000, 50), "runs": 15},
        {**_entry(op, "chdb", 10_000_000, 50), "runs": 7},
        {**_entry(op, "postgresql", 1_000_000, 50), "runs": 15},
    ]
    text = "\n".join(side_by_side_section(entries, "now"))
    assert "of 15 (chdb 1,000,000), 7 (chdb 10,000,000), 15 (postgresql 1,000,000) runs" in text
    same = [{**e, "runs": 30} for e in entries]
    assert "of 30 runs after a warm-up" in "\n".join(side_by_side_section(same, "now"))


def test_a_chdb_size_this_run_did_not_measure_is_kept_and_says_when(monkeypatch):
    """BENCH_ONLY=clickhouse at 1M only keeps the 10M column of the run before, with the time
    it was measured over it; the 1M figures and everything else of the family go."""
    from bench.run import kept_chdb_sizes

    page = PREFIX + "explorer_first_page_24h_by_time"
    earlier = {
        "meta": {"clickhouse_measured_at": "2026-12-07 01:29 UTC"},
        "results": [
            _entry(page, "chdb", 1_000_000, [50, "a"]),
            _entry(page, "chdb", 10_000_000, [50, "b"], median=57.0),
            _entry(page, "postgresql", 1_000_000, [50, "a"]),
            _entry("clickhouse_insert", "chdb", 10_000_000, None),
        ],
    }
    monkeypatch.setenv("BENCH_CHDB_SIZES", "1000000")
    kept = kept_chdb_sizes(earlier, [1_000_000])
    assert [(e["size"], e["median_ms"], e["measured_at"]) for e in kept] == [
        (10_000_000, 57.0, "2026-12-07 01:29 UTC")
    ]
    monkeypatch.setenv("BENCH_CHDB_SIZES", "1000000,10000000")
    assert kept_chdb_sizes(earlier, [1_000_000]) == []
    new = [
        _entry(page, "chdb", 1_000_000, [50, "a"]),
        _entry(page, "postgresql", 1_000_000, [50, "a"]),
    ]
    lines = side_by_side_section(new + kept, "2026-12-07 05:00 UTC")
    head = next(line for line in lines if line.startswith("| operation |"))
    assert "chdb 1,000,000 |" in head
    assert "chdb 10,000,000 (measured 2026-12-07 01:29 UTC) |" in head
    assert _row(lines, f"`{page[len(PREFIX) :]}`")[3] == "57.0 / 114.0 ms"
