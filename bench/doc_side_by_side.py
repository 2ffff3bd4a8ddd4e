"""docs/benchmarks.md's table of issue 17's figures, the chDB span store beside PostgreSQL:
one row per figure the issue asks for, its target, and each store's value
(`bench/clickhouse_app_case.py`, the OTLP ingest cases, the main case's PostgreSQL load)."""

from __future__ import annotations

from bench.app_checks import empty
from bench.clickhouse_app_case import PREFIX, READS
from bench.doc import fmt

TARGETS = {
    "explorer_first_page_": "p95 <= 50 ms",
    "explorer_search_": "p95 <= 200 ms",
    "explorer_open_": "p95 <= 50 ms",
    "metrics_": "<= 150 ms",
    "overview_": "<= 300 ms",
}


def _target(name: str) -> str:
    return next(t for prefix, t in TARGETS.items() if name.startswith(prefix))


def _ms(e: dict) -> str:
    if e.get("refused"):  # the store refused the read (bench/clickhouse_app_case._refused)
        reason = "memory" if "memory limit" in e["refused"].lower() else e["refused"][:60]
        return f"refused ({reason})"
    return f"{fmt(e['median_ms'])} / {fmt(e['p95_ms'])} ms"


def _ingest(e: dict) -> str:
    return (
        f"{fmt(e['rows_per_s'], 0)} spans/s, p99 {fmt(e.get('p99_ms'), 0)} ms, "
        f"server {fmt(e['peak_rss_mb'], 0)} MB"
    )


def _insert(e: dict) -> str:
    return f"{fmt(e['rows_per_s'], 0)} spans/s"


def _export(e: dict) -> str:
    return f"{fmt(e['rows_per_s'], 0)} rows/s ({e['rows']:,} rows)"


def _load(e: dict) -> str:
    return f"{fmt(e['median_ms'] / 1000, 0)} s ({fmt(e['rows_per_s'], 0)} spans/s)"


def _bytes(e: dict) -> str:
    return fmt(e.get("rows"), 0)


def _runs(app: list[dict], columns: list[tuple[str, int]]) -> str:
    """How many timed runs each column's reads had, as measured (BENCH_CHDB_RUNS may differ
    per size): "30 runs", or "15 runs (chdb 1,000,000), 7 (chdb 10,000,000), ..."."""
    counts = []
    for db, size in columns:
        runs = {
            e.get("runs")
            for e in app
            if e["database"] == db and e["size"] == size and "first_page" in e["operation"]
        }
        runs.discard(None)
        counts.append((db, size, max(runs) if runs else None))
    known = {n for _, _, n in counts if n is not None}
    if len(known) == 1:
        return f"{known.pop()} runs"
    return (
        ", ".join(f"{n if n is not None else '?'} ({db} {size:,})" for db, size, n in counts)
        + " runs"
    )


def side_by_side_section(entries: list[dict], measured_at: str | None) -> list[str]:
    """The table, or nothing when the app case has not run."""
    app = [e for e in entries if e["operation"].startswith(PREFIX)]
    if not app:
        return []
    chdb_sizes = sorted({e["size"] for e in app if e["database"] == "chdb"})
    pg_sizes = sorted({e["size"] for e in app if e["database"] == "postgresql"})
    columns = [("chdb", s) for s in chdb_sizes] + [("postgresql", s) for s in pg_sizes[-1:]]

    def find(operation: str, db: str, size: int | None) -> dict | None:
        found = [
            e
            for e in entries
            if e["operation"] == operation
            and e["database"] == db
            and (size is None or e["size"] == size)
        ]
        return found[-1] if found else None

    def row(label: str, target: str, ops: dict[str, str], show, sized=True) -> str:
        cells = []
        for db, size in columns:
            e = find(ops[db], db, size if sized else None) if db in ops else None
            cells.append(show(e) if e else "—")
        same = "—"
        pg = find(ops.get("postgresql", ""), "postgresql", pg_sizes[-1]) if pg_sizes else None
        chdb = find(ops.get("chdb", ""), "chdb", pg_sizes[-1]) if pg_sizes else None
        # an empty answer on both (a wrong org or window) would be "equal" and prove nothing
        if pg and chdb and not empty(pg.get("check")) and not empty(chdb.get("check")):
            same = "yes" if pg["check"] == chdb["check"] else f"no: {chdb['check']} / {pg['check']}"
        return f"| {label} | {target} | {' | '.join(cells)} | {same} |"

    def when(db: str, size: int) -> str:
        """A column kept from an earlier run (`bench/run.kept_chdb_sizes`) says when."""
        at = {e.get("measured_at") for e in app if e["database"] == db and e["size"] == size}
        at.discard(None)
        return f" (measured {max(at)})" if at else ""

    head = " | ".join(f"{db} {size:,}{when(db, size)}" for db, size in columns)
    lines = [
        "## Issue 17 side by side: the chDB span store and PostgreSQL",
        "",
        f"Measured {measured_at} (`BENCH_ONLY=clickhouse`, `bench/clickhouse_app_case.py`; "
        "docs/scale.md). The same code paths on both (the explorer's, the metrics engine's, the "
        "Overview's, the export job's and the alert cycle's, given the engine "
        "`storage/span_reads.py` gives them), the demo org over the same windows ending at the "
        f"demo data's end; median / p95 of {_runs(app, columns)} after a warm-up "
        "(alerts: a third as many cycles, at least 3, after a first), each run's window ending a second after the one before (as the app's 'now' "
        "moves; no cache keyed on the query, such as chDB's query condition cache, answers a "
        "repeat; the all-time search and the trace have no window and repeat the same query). "
        "chDB: a folder of its own loaded by `load_demo` through the app's ingest path, "
        "DATABASE_URL on SQLite beside it; PostgreSQL: the main case's database. OTLP ingest: "
        "`bench/clickhouse_ingest_case.py` (the real server, chDB into an empty store) and "
        "`bench/ingest_case.py` (PostgreSQL holding this size), each beside its store's plain "
        "insert of the same rows, with the server's peak RSS. The other peak RSS: the reading "
        "process's (reads, export, alerts; the load ran in a process of its own), which holds "
        "chDB itself but not PostgreSQL's server: its backends' peak RSS (summed over this "
        "process's connections, sampled every 50 ms; shared buffers they touched included, "
        "parallel workers not) is a row of its own. 'Same "
        "answer' (— unless both stores answered something): the rows of each page (their ids in order; the errors by cost, all costing 0, "
        "by their sort values), the series' requests and cost, the Overview's requests, traces "
        "and tokens, the export's rows and the alert cycle's rules and groups are equal on both "
        "stores (both hold the main case's 50-span trace).",
        "",
        f"| operation | target | {head} | same answer |",
        "| --- | --- |" + " ---: |" * len(columns) + " --- |",
        row(
            "OTLP ingest, 4 exporters (chDB into an empty store)",
            ">= 20k spans/s",
            {"chdb": "clickhouse_ingest_otlp_4_clients", "postgresql": "ingest_otlp_4_clients"},
            _ingest,
            sized=False,
        ),
        row(
            "plain insert of the same rows",
            "reference",
            {"chdb": "clickhouse_ingest_insert_baseline", "postgresql": "ingest_copy_baseline"},
            _insert,
            sized=False,
        ),
    ]
    for name in READS:
        ops = {"chdb": PREFIX + name, "postgresql": PREFIX + name}
        lines.append(row(f"`{name}`", _target(name), ops, _ms))
    both = {"chdb": f"{PREFIX}export_csv_gzip", "postgresql": f"{PREFIX}export_csv_gzip"}
    lines.append(row("export CSV.gz, every span of the org", ">= 150k rows/s", both, _export))
    both = {
        "chdb": f"{PREFIX}alerts_cycle_100_rules",
        "postgresql": f"{PREFIX}alerts_cycle_100_rules",
    }
    lines.append(row("100 alert rules, one cycle", "<= 1 s", both, _ms))
    lines.append(
        row(
            "demo spans loaded",
            "10M in <= 5 min",
            {"chdb": f"{PREFIX}demo_load", "postgresql": "demo_load"},
            _load,
        )
    )
    both = {"chdb": f"{PREFIX}disk_bytes_per_span", "postgresql": f"{PREFIX}disk_bytes_per_span"}
    lines.append(row("bytes on disk per span (spans, trace totals, rollups)", "—", both, _bytes))
    rss = []
    for db, size in columns:
        peaks = [
            e["peak_rss_mb"]
            for e in app
            if e["database"] == db
            and e["size"] == size
            and e["peak_rss_mb"] is not None
            and not e["operation"].endswith(("demo_load", "disk_bytes_per_span"))
        ]
        rss.append(f"{fmt(max(peaks), 0)} MB" if peaks else "—")
    lines.append(f"| peak RSS of the reading process | — | {' | '.join(rss)} | — |")
    server = []
    for db, size in columns:
        peaks = [
            e["server_peak_rss_mb"]
            for e in app
            if e["database"] == db and e["size"] == size and e.get("server_peak_rss_mb")
        ]
        server.append(f"{fmt(max(peaks), 0)} MB" if peaks else "—")
    lines.append(
        "| peak RSS of the database server's backends (chDB: inside the reading process) | — | "
        f"{' | '.join(server)} | — |"
    )
    return [*lines, ""]
