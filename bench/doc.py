"""docs/benchmarks.md written from the figures of bench/results.json: the tables, and the
sections of the grid, the sketch, the span store and the dashboards in the browser."""

from __future__ import annotations

import json
from pathlib import Path

from bench.families import FAMILIES

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"


def fmt(value, digits=1) -> str:
    if value is None:
        return "—"
    return f"{value:,.{digits}f}"


def write_doc(entries: list[dict], meta: dict) -> None:
    from bench.doc_side_by_side import side_by_side_section  # it formats with `fmt` above

    lines = [
        "# Benchmarks",
        "",
        "Measured by `make bench` on this project's machine "
        f"({meta['machine']}, {meta['cpus']} cores; {meta['measured_at']}, exports "
        f"{meta['exports_measured_at']}, ingest {meta.get('ingest_measured_at')}, alerts "
        f"{meta.get('alerts_measured_at')}, API {meta.get('api_measured_at')}, grid "
        f"{meta.get('grid_measured_at')}, what changed {meta.get('changes_measured_at')}). Figures are what was measured, "
        "nothing is estimated. Data: the demo generator (`--days 30 --seed 7`). Query timings are the "
        "median and p95 of repeated runs after one warm-up run. Peak RSS is that case's process "
        "maximum so far (load included).",
        "",
        "| operation | database | spans | median ms | p95 ms | rows/s | peak RSS MB |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    grid = [e for e in entries if e["operation"].startswith("grid_")]
    sketch = [e for e in entries if e["operation"].startswith("sketch_")]
    clickhouse = [e for e in entries if e["operation"].startswith(FAMILIES["clickhouse"])]
    # issue 17's figures side by side have a table of their own
    app = [e for e in clickhouse if e["operation"].startswith("clickhouse_app_")]
    clickhouse = [e for e in clickhouse if e not in app]
    entries = [
        e for e in entries if e not in grid and e not in sketch and e not in clickhouse + app
    ]
    for e in sorted(entries, key=lambda e: (e["operation"], e["database"], e["size"])):
        lines.append(
            f"| {e['operation']} | {e['database']} | {e['size']:,} | {fmt(e['median_ms'])} | "
            f"{fmt(e['p95_ms'])} | {fmt(e['rows_per_s'], 0)} | {fmt(e['peak_rss_mb'], 0)} |"
        )
    lines += [
        "",
        "Operations:",
        "- `demo_load`: generate and store the spans (COPY via a staging table on PostgreSQL, "
        "executemany on SQLite; both idempotent); rows/s is the sustained rate including generation.",
        "- `home_summary`: everything the home page asks for (two 24-hour periods and the hourly series).",
        "- `dims_*` (issue 19, PostgreSQL, a database of its own per size, `BENCH_ONLY=dims`, "
        "`bench/dims_case.py`): declaring `tag:customer` and back-filling 30 days "
        "(`dims_backfill_30d_*`, rows/s over every span), then the 30-day daily cost by the "
        "declared key, by an undeclared key (`metadata:region`) and by model; the suffix names "
        "the path that answered. Targets at 1M spans: declared <= 150 ms, undeclared <= 2 s.",
        "- `dashboard_*` (issue 20 part 1, on the main case's database per size and store, "
        "`BENCH_ONLY=dashboard`, `bench/dashboard_case.py`): a 6-chart starter dashboard, "
        "uncached, through the page's own code (every chart's metrics query, a number's previous "
        "period, the figures and tables): Cost by team over its 7 days and over 30 days, Latency "
        "SLOs over its 24 hours. Target at 1M spans on PostgreSQL: within the 1.5 s a person waits "
        "for the dashboard in the browser.",
        *dashboard_ui_note(entries, meta.get("dashboard_ui_measured_at")),
        "- `home_period_stats_24h`, `home_requests_per_hour_24h`: its parts; rows/s counts the spans in the window.",
        "- `explorer_first_page_*`: the first page (50 rows) of the Traces page: the last 24 h by "
        "time, 7 days of one model by time, 7 days of errors by cost, 30 days of one model in "
        "production by duration, and the last 24 h as whole traces by the root's time and by the "
        "tree's total cost (which must total every matching trace before sorting). Targets at 1M "
        "spans: p95 <= 50 ms on PostgreSQL, <= 150 ms on SQLite.",
        "- `explorer_search_*`: full-text search (FTS5 trigram on SQLite, pg_trgm on PostgreSQL), first "
        "page; target p95 <= 200 ms at 1M.",
        "- `explorer_open_50_span_trace`: the trace detail of a 50-span trace; target <= 50 ms.",
        "- `metrics_30d_hourly_by_model`: the Metrics page's 30-day hourly series grouped by model "
        "with request count, average and p95 latency and summed cost, with 'now' 17 minutes past "
        "the hour (so the range has ragged edges): from rollups (whole hours from the 1-hour "
        "rollup, the edges from 1-minute rollups and raw spans). `..._raw`: the same from raw "
        "spans with exact percentiles, for comparison. Target: <= 150 ms on PostgreSQL. Like every "
        "query timing here it runs in a process set up as server.py sets up the server's (freed "
        "memory kept, start-up objects frozen out of the garbage collector's sight).",
        "- `overview_7d_with_comparison`: everything the Overview's tiles need for the last 7 days "
        "and the 7 days before (totals, means, standard deviations, the p95 and its noise test, "
        "distinct users and sessions); `..._raw` computes the same from raw spans. Target: <= 300 ms.",
        "- `export_csv_gzip_worker`: the export worker writing every span of the larger demo org "
        "(about 72% of the spans) as CSV.gz, default fields, page by page (PostgreSQL's COPY writes "
        "each page's CSV lines, two pages ahead on their own connections; gzip is ISA-L's at level 1, "
        "whose file is ~7% larger than `gzip -6`'s); peak RSS is the worker process's. `export_copy_to_stdout_gzip_baseline`: PostgreSQL's own `COPY ... TO STDOUT` of "
        "the same rows and columns piped through `gzip -6`. Targets: >= 100k rows/s, memory not "
        "growing with rows (100k vs 1M within 20%, under 300 MB).",
        "- `ingest_otlp_4_clients`: the real server on PostgreSQL (this size of demo data already "
        "in the database) taking `POST /v1/traces` from 4 concurrent clients for 40 s, each "
        "posting pre-encoded protobuf batches of 512 new GenAI spans (agent, embedding, two chats "
        "with text) and waiting for the answer, as the SDK's BatchSpanProcessor does; rows/s counts "
        "committed spans, median/p95 are request latencies (p99 in results.json). "
        "`ingest_copy_baseline`: a plain `COPY FROM STDIN` of the same stored rows into a copy of "
        "the spans table with the same indexes and no rollups. Target: >= 20k spans/s.",
        "- `alerts_cycle_100_rules`: one evaluation cycle of 100 rules (latency percentiles, error "
        "and success rates, cost and token sums and averages, request counts; windows of 5 min to "
        "1 day; some filtered to a model or environment, a quarter with one alert per model) plus "
        "the system rules, at the end of the demo data; results.json also gives how many metrics "
        "queries the cycle ran (rules sharing filter, window and group-by share one). Target: <= 1 s.",
        "- `alerts_anomaly_cycle_10_rules`: one evaluation cycle of 10 anomaly rules ('unusual for "
        "this hour', issue 20: the same series, windows of 5 min to 1 hour, a third with one alert "
        "per model, 4 weeks of baseline) plus the system rules, at the end of the demo data: each "
        "batch runs its window's query and the same query 1 to 4 weeks back (from rollups where "
        "they can answer). Target: <= 1 s.",
        "- `api_traces_first_page_8_clients`: `GET /api/v1/traces` first pages (50 rows) through the "
        "real server on PostgreSQL from 8 concurrent client processes (keep-alive) on the same machine, each "
        "with its own key, cycling through the explorer's typical filters over the demo data's last "
        "day and week, for 30 s; latency end to end at the client (p99 in results.json), rows/s is "
        "requests per second. Target: p95 <= 80 ms.",
        "- `changes_*`: What changed (`reports/whatchanged.py`) over the last 7 days against the 7 "
        "before, 'now' 17 minutes past the hour: total cost and the error rate (mix and rate) by "
        "model, from rollups; average latency by user, from raw spans (users are not in the "
        "rollups); `changes_overview_headlines_7d`: the Overview's six headline changes by model, "
        "read by one pair of queries.",
        "- `people_*` (measured "
        f"{meta.get('people_measured_at')}): the Users and Sessions views' first pages (50 rows) "
        "over the last 24 hours, 7 and 30 days of the demo org, by their default sort (requests; "
        "last seen) and by cost, users searched by part of an id, and one session opened as a "
        "conversation (`people_open_session`), each in a database of its own of this size. "
        "The lists aggregate every span of the window that names a user (a session): read "
        "through the covering indexes of migration 0019, per-trace totals from `trace_totals`.",
        "- `retention_delete_30d`: a database of its own per store with this many demo spans over "
        "60 days, every org keeping spans 30 days; the worker's retention runs at the end of the "
        "data until nothing expired is left (on PostgreSQL the wholly expired month is dropped, "
        "the rest deleted 500 traces per transaction; on SQLite batches, then the incremental "
        "vacuum); median = the whole deletion, rows/s = spans deleted per second "
        "(`bench/retention_case.py`; results.json gives months dropped and bytes returned). "
        "`retention_ingest_alone` / `retention_ingest_during_delete`: one writer storing batches "
        "of 512 new spans through the ingest write path for 15 s before, and throughout the "
        "deletion; results.json checks every span it wrote is stored.",
        "",
        *sketch_section(sketch, meta.get("sketch_measured_at")),
        *side_by_side_section(app + clickhouse + entries, meta.get("clickhouse_measured_at")),
        *clickhouse_section(clickhouse, meta.get("clickhouse_measured_at")),
        *grid_section(grid),
    ]
    DOC.parent.mkdir(exist_ok=True)
    DOC.write_text("\n".join(lines))


def clickhouse_section(entries: list[dict], measured_at: str | None) -> list[str]:
    """The ClickHouse span store on chDB (issue 17, docs/scale.md), `bench/clickhouse_case.py`."""
    if not entries:
        return []
    lines = [
        "## ClickHouse span store on chDB (issue 17)",
        "",
        f"Measured {measured_at} (`BENCH_ONLY=clickhouse`, `bench/clickhouse_case.py`; docs/scale.md). "
        "`clickhouse_insert`: demo rows through `storage/clickhouse/writes.py` (the stored-span "
        "check, the insert, the views into rollups and trace totals), generation excluded; "
        "`clickhouse_demo_load` includes it. Reads are org 1's: the first page of 50 and the "
        "totals over 24 hours and 30 days, then the 30-day reads written the other ways one row "
        "per span can be read (`_no_dedup`, `_final`, `_argmax`, `_limit_1_by`). "
        "`clickhouse_migrate_*` (`bench/clickhouse_migrate_case.py`): `migrate-spans` from the "
        "PostgreSQL bench database (read-only) into a fresh chDB folder, the rerun, `--check`.",
        "",
        "| operation | spans | median ms | p95 ms | rows/s | bytes on disk per span | peak RSS MB |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for e in sorted(entries, key=lambda e: (e["size"], e["operation"])):
        per_span = e.get("rows") if e["operation"].startswith("clickhouse_disk_") else None
        lines.append(
            f"| {e['operation']} | {e['size']:,} | {fmt(e['median_ms'])} | {fmt(e['p95_ms'])} | "
            f"{fmt(e['rows_per_s'], 0)} | {fmt(per_span, 0)} | {fmt(e['peak_rss_mb'], 0)} |"
        )
    return [*lines, ""]


def dashboard_ui_note(entries: list[dict], measured_at: str | None) -> list[str]:
    """The bullet of `dashboard_ui_*`: what was timed, what was cached, and the machine's load
    and the page's own computing time of each figure."""
    ui = sorted(
        (e for e in entries if e["operation"].startswith("dashboard_ui_")),
        key=lambda e: (e["operation"], e["size"]),
    )
    if not ui:
        return []
    each = "; ".join(
        f"`{e['operation']}` at {e['size']:,}: sidebar {fmt(e.get('sidebar_median_ms'), 0)} ms, "
        f"first chart {fmt(e.get('first_chart_median_ms'), 0)} ms, computed in "
        f"{fmt(e['computed_median_ms'], 0)} ms (medians), load {fmt(e['load_1m_start'], 2)} -> "
        f"{fmt(e['load_1m_end'], 2)}"
        for e in ui
    )
    return [
        f"- `dashboard_ui_*` (issue 20, measured {measured_at}, `BENCH_ONLY=dashboard_ui`, "
        "`bench/dashboard_browser_case.py`): the same starter dashboards as `dashboard_*`, in "
        "Debian's Chromium (headless, through Playwright) from the real server (`streamlit run "
        "server.py`, embedded worker off) on PostgreSQL, on the dims case's database of this "
        "size (the main case's data with `tag:customer` declared; the starter dashboards and 8 "
        "bench admins added). Timed from `page.goto` of the dashboard's link until every number, "
        "Vega-Lite chart (its marks) and table (its canvas) is drawn, the page's 'N charts · "
        "computed "
        "in' caption is shown and no spinner, skeleton, stale element or running status is "
        "left; one warm-up, then 7 timed runs, each a new page (a new Streamlit session) of "
        "another bench admin. Not cached: the page's metrics cache (`ui/cached.py`, TTL 30 s, or "
        "1 h for a range that ended over an hour ago, keyed by the reader's scope, the query and "
        "the minute) held none of a run's answers, so every chart was computed. Cached: the "
        "sidebar's value lists (5 min per scope), the browser's copy of the app's scripts and "
        "the server's imports (each admin first opened Latency SLOs over an untimed day), as "
        "for a person coming from another page. The demo data ends at the bench's END "
        "(2026-11-04 15:00 UTC), weeks before the machine's clock, so the dashboards' own "
        "relative periods would show nothing: the links give start and end explicitly, and the "
        "browser's zone is Asia/Tokyo, whose midnight is 15:00 UTC, so the sidebar's whole "
        "local days end exactly at END (Cost by team over 7 and 30 days, Latency SLOs over 1 "
        "day, as `dashboard_*`). The floor under them, in the same run: `dashboard_ui_floor_*`, "
        "the same page with a dashboard of one number (the app's start in the browser, the "
        "log-in check, the sidebar, one query) and of one small pie (that plus loading and "
        "drawing Vega-Lite's code; plotly's 4.7 MB before 2026-12-06), which the case adds. On the way (results.json `*_median_ms`, `*_p95_ms`, from "
        "`page.goto` too): `sidebar`, the sidebar's period shown (the session started, the "
        "log-in checked, the script at the filters); `first_chart`, the grid's first chart "
        "shown (the page reads its charts side by side and draws the grid once all are "
        "read); `computed`, the page's own "
        "'computed in' time loading the charts' data (the browser shows what the server sends in "
        "batches, so the stages overlap). The machine has 2 cores (1-minute load average at "
        "the start -> end): "
        f"{each}. Target at 1M spans: <= 1.5 s.",
    ]


SKETCH_BYTES = "sketch_bytes_per_row_"
# The same figures taken with the 64-bin packed sketch before migration 0015 (bench/sketch_case.py's
# `measure` on that checkout; the file says where and when).
SKETCH_BEFORE = ROOT / "bench" / "sketch_before.json"


def sketch_section(entries: list[dict], measured_at: str | None) -> list[str]:
    """The latency sketch (storage/packed_sketch.py): bytes per rollup row and percentile chart
    latency, with the 64-bin sketch's figures beside them when recorded."""
    sizes = [e for e in entries if e["operation"].startswith(SKETCH_BYTES)]
    if not sizes:
        return []
    before = json.loads(SKETCH_BEFORE.read_text()) if SKETCH_BEFORE.exists() else {}
    old = {(e["operation"], e["database"], e["size"]): e for e in before.get("results", [])}
    lines = [
        "## Latency sketch: size and speed",
        "",
        f"Measured {measured_at}. Rollup rows keep a sparse sketch within ±1% (870 log bins, "
        "4 bytes per bin holding spans; `sketch_bytes` is PostgreSQL's `pg_column_size` and "
        "SQLite's `length`). "
        "`before`: the 64-bin packed sketch (±11.1%) on the same data"
        + (f", {before['meta']['note']}" if before.get("meta", {}).get("note") else "")
        + ".",
        "",
        "| rollup | database | spans | rows | sketch bytes/row (before) | max | whole row bytes (before) |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for e in sorted(sizes, key=lambda e: (e["database"], e["size"], e["operation"])):
        b = old.get((e["operation"], e["database"], e["size"]), {})
        lines.append(
            f"| {e['operation'].removeprefix(SKETCH_BYTES)} | {e['database']} | {e['size']:,} | "
            f"{e['rows']:,} | {fmt(e['sketch_bytes'], 0)} ({fmt(b.get('sketch_bytes'), 0)}) | "
            f"{fmt(e['sketch_bytes_max'], 0)} | {fmt(e['row_bytes'], 0)} "
            f"({fmt(b.get('row_bytes'), 0)}) |"
        )
    lines += [
        "",
        "| operation | database | spans | median ms (before) | p95 ms (before) |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    timed = [e for e in entries if e not in sizes]
    for e in sorted(timed, key=lambda e: (e["operation"], e["database"], e["size"])):
        b = old.get((e["operation"], e["database"], e["size"]), {})
        lines.append(
            f"| {e['operation']} | {e['database']} | {e['size']:,} | {fmt(e['median_ms'])} "
            f"({fmt(b.get('median_ms'))}) | {fmt(e['p95_ms'])} ({fmt(b.get('p95_ms'))}) |"
        )
    lines += [
        "",
        "- `sketch_chart_30d_hourly_by_model`: the Metrics page's default chart (as "
        "`metrics_30d_hourly_by_model`); `..._percentiles_by_model`: p50, p95 and p99 only; "
        "`sketch_totals_30d_percentiles_by_model`: every sketch of 30 days merged into one per "
        "model. `sketch_rollup_rebuild`: recomputing every rollup from the spans, what migration "
        "0015 runs on upgrade (one run).",
        "",
    ]
    return lines


GRID_GOAL_MS = 200
GRID_GROWTH_MB = 500


def _grid_status(e: dict) -> str:
    return ", ".join(f"{s} x{n}" for s, n in sorted(e["statuses"].items()))


def _grid_shape_order(e: dict) -> tuple:
    """Explorer shapes first, then metrics by group-bys and bucket in the grid's own order."""
    from bench.grid_case import shapes

    order = {s.name: i for i, s in enumerate(shapes())}
    return (order.get(e["operation"], len(order)), e["operation"], e["database"])


def grid_section(grid: list[dict]) -> list[str]:
    """The bounded-reads grid (issue 25): a row per shape and store, then memory and the goal."""
    if not grid:
        return []
    shapes = sorted((e for e in grid if "statuses" in e), key=_grid_shape_order)
    memory = sorted((e for e in grid if "growth_mb" in e), key=lambda e: e["database"])
    lines = [
        "## Bounded reads grid",
        "",
        "Every shape of the explorer and of the metrics API, asked of the real server (`make run`'s "
        "`streamlit run server.py`, default read budget of 10 s and metrics caps) over HTTP with one "
        "admin key, one request at a time, by `BENCH_ONLY=grid make bench` (`bench/grid_case.py`). "
        "Explorer: `GET /api/v1/traces`, first page, a 7-day window ending at the demo data's end, "
        "no other filter, every `mode` x `sort` (descending) x `limit`. Metrics: `GET /api/v1/metrics` "
        "with `duration_ms.p95`, `request_count.count` and `total_cost.sum`, grouped by nothing (g0) "
        "up to model, environment, operation, status and user_id (g5), in every bucket: 1min and "
        "5min over the last 24 h (they chart at most 1 and 5 days), 1hour, 1day, auto and none "
        "(totals) over 30 days, ending 17 minutes past the hour. One warm-up call per shape, then 5 "
        "timed runs, latency end to end at the client; each call ends its window a second later "
        "than the one before, so the API's 15-second answer cache answered none of them (checked: "
        "results.json's `cached_answers`). p95 is interpolated between the 5 runs; a refused or "
        "timed-out run counts with its own time and status. Rows: data rows of the answer (metrics: "
        "the buckets of each group that hold data, the API's default since it stopped sending "
        "empty ones on 2026-12-06; every bucket x group before). Peak growth: the server process's RSS, sampled every 20 ms, over its "
        "value after one light request of each route (the baseline), across the whole grid. "
        "The org declares no dimension unless `GRID_DECLARE=user_id` is set (then user_id "
        "groupings read rollups once it is back-filled; the back-fill's time is below).",
        "",
        "| shape | database | spans | status (runs) | median ms | p95 ms | max ms | rows |",
        "| --- | --- | ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    for e in shapes:
        lines.append(
            f"| {e['operation'].removeprefix('grid_')} | {e['database']} | {e['size']:,} | "
            f"{_grid_status(e)} | {fmt(e['median_ms'])} | {fmt(e['p95_ms'])} | "
            f"{fmt(e['max_ms'])} | {e['rows']:,} |"
        )
    lines.append("")
    for m in memory:
        lines.append(
            f"- {m['database']}, {m['size']:,} spans, measured {m['started_at']} to "
            f"{m['finished_at']}"
            + (f" (code {m['code']})" if m.get("code") else "")
            + f": server RSS {fmt(m['baseline_rss_mb'], 0)} MB after the first "
            f"requests, peak {fmt(m['peak_rss_mb'], 0)} MB, growth {fmt(m['growth_mb'], 0)} MB."
        )
    for b in sorted(
        (e for e in grid if e["operation"] == "grid_declare_user_id_backfill"),
        key=lambda e: e["database"],
    ):
        lines.append(
            f"- {b['database']}, {b['size']:,} spans: declaring user_id back-filled "
            f"{b['rows']:,} spans in {fmt(b['median_ms'] / 1000, 0)} s "
            f"({fmt(b['rows_per_s'], 0)} spans/s, {b['runs']} chunks)."
        )
    slow = [e for e in shapes if e["p95_ms"] > GRID_GOAL_MS]
    refused = [e for e in shapes if set(e["statuses"]) != {"200"}]
    big = [m for m in memory if m["growth_mb"] >= GRID_GROWTH_MB]
    lines += [
        "",
        f"Goal (issue 25): p95 <= {GRID_GOAL_MS} ms for every shape, no answer over the read "
        f"budget (503 `timeout`), peak growth under {GRID_GROWTH_MB} MB. Measured against it: "
        f"{len(slow)} of {len(shapes)} shape x database rows have a p95 over {GRID_GOAL_MS} ms, "
        f"{len(refused)} answered something other than 200 "
        f"({sum('503' in ' '.join(e['statuses']) for e in shapes)} with a 503), and "
        f"{len(big)} of {len(memory)} databases grew the server by {GRID_GROWTH_MB} MB or more.",
        "",
    ]
    if slow or refused:
        lines.append("Over the goal (p95 and statuses; why refused, as the API said it):")
    for e in sorted({id(e): e for e in slow + refused}.values(), key=_grid_shape_order):
        why = "; ".join(sorted({m.split(". ")[0] for m in e.get("errors", [])}))
        lines.append(
            f"- {e['operation'].removeprefix('grid_')} on {e['database']}: p95 "
            f"{fmt(e['p95_ms'])} ms, {_grid_status(e)}" + (f" ({why})" if why else "")
        )
    lines.append("")
    return lines
