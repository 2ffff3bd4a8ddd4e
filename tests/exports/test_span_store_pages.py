"""An export's reads on the span store (`exports/span_store_pages.py`): windows of start time,
cut into the job's pages, with CSV text written by the engine. A read's end and a page's end
fall inside a run of spans with one start time, among racing copies of two of them, and the
text is the kind CSV must quote (commas, quotes, line breaks, a carriage return, non-ASCII,
empty) with floats Python writes in exponent form. The reference is the span store's raw rows
in polars (each span's newest copy) written out by `csv.writer` with each value's text made
independently (`tests/exports/test_worker.expected_value`), and the file the explorer's keyset
pages (`traces/query.iter_span_pages`) make through the same writers: both byte for byte."""

from __future__ import annotations

import csv
import dataclasses
import gzip
import io
import json
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, true

from observatory_core.accounts.permissions import Role
from observatory_core.accounts.scope import Scope, scoped_spans
from observatory_core.exports import (
    job_attempt,
    jobs,
    page_sources,
    span_store_csv,
    span_store_json,
    span_store_pages,
)
from observatory_core.exports.jobs import MAX_ROWS, create_export, get_export
from observatory_core.exports.span_store_csv import csv_line
from observatory_core.exports.span_store_pages import KEYS, KeysetStalled, store_pages
from observatory_core.exports.worker import WorkerConfig, work_once
from observatory_core.exports.writers import open_writer
from observatory_core.filters.spec import FilterSpec
from observatory_core.semantic.fields import FIELDS
from observatory_core.storage.clickhouse import current
from observatory_core.storage.clickhouse.writes import write_spans
from observatory_core.storage.engine import get_engine
from observatory_core.storage.migrate import upgrade
from observatory_core.storage.schema import orgs as orgs_table
from observatory_core.storage.schema import projects
from observatory_core.storage.stores import store_for
from observatory_core.traces.fields import ALL_FIELDS, field_column
from observatory_core.traces.query import iter_span_pages, pinned_conditions
from tests.chdb_store import write_later_copy
from tests.exports.test_span_store import expected_rows
from tests.exports.test_worker import expected_value
from tests.helpers import END, load_small_demo, span

TIE = END - timedelta(hours=5, microseconds=123_457)  # one start time for seven spans
NAMES = ["a,b", 'say "hi"', "two\nlines", "carriage\rreturn", "naïve — 漢字", "", "plain"]
FLOATS = [1e-07, 7.8e-07, 2.0, 1e16, 123456789.125, 0.1, None]
AWKWARD_AT = TIE - timedelta(hours=6)
AWKWARD = [
    "back\\slash \\u00e9 \\/ \\u000B \\\\/ /",
    "nul\x00 ctl\x01\x0b\x0e\x1a\x1f del\x7f",
    "tab\t bs\b ff\f nl\n cr\r",
    "line\u2028sep\u2029",
    "emoji 😀 naïve 漢字 \ufeff",
    'sl/ash </script> "quoted" \\"',
    "",
    "plain",
]
EDGE_FLOATS = [5e-324, 1.7976931348623157e308, -0.0, 1e22, 1e-05, 0.0001, 1e16, 123.0, None]


@pytest.fixture(scope="module")
def routed(tmp_path_factory, chdb_session):
    """DATABASE_URL (SQLite) with the demo's orgs; the span store holds a few demo spans plus
    the tie run and its copies."""
    engine = get_engine(f"sqlite:///{tmp_path_factory.mktemp('pages_ch') / 'app.db'}")
    upgrade(engine)
    load_small_demo(engine, spans_count=40, days=1, seed=3)
    store = chdb_session.store("export_pages")
    with engine.connect() as conn:
        acme = conn.execute(select(orgs_table.c.id).where(orgs_table.c.slug == "acme")).scalar()
        project = conn.execute(select(projects.c.id).where(projects.c.org_id == acme)).scalar()
    rows = [
        span(
            acme,
            project,
            TIE,
            name=NAMES[i],
            ttft_ms=FLOATS[i],
            total_cost_usd=FLOATS[-1 - i],
            input_tokens=i * 1_000_003,
            user_id=None if i % 2 else f"user,{i}",
        )
        for i in range(7)
    ]
    # spans either side of the run, one of them a microsecond before it
    rows += [
        span(acme, project, TIE - timedelta(microseconds=1), name="just before"),
        *(span(acme, project, TIE + timedelta(seconds=s), name=f"after {s}") for s in (1, 1, 2)),
        *(span(acme, project, TIE - timedelta(minutes=m), name=f"before {m}") for m in (1, 2, 3)),
        # a boolean set, negative and large integers, text with leading spaces
        span(
            acme,
            project,
            TIE - timedelta(minutes=4),
            name="  leading spaces",
            service_name=" svc",
            text_truncated=True,
            input_tokens=-5,
            output_tokens=2**31 - 1,  # Int32, as the column
        ),
    ]
    # text JSON must escape, floats at the ends of their range, JSON fields holding both
    rows += [
        span(
            acme,
            project,
            AWKWARD_AT - timedelta(minutes=i),
            name=text,
            error_message=text[::-1] or None,
            user_id=None if i % 3 == 0 else text,
            service_name="svc/é",
            ttft_ms=EDGE_FLOATS[i % len(EDGE_FLOATS)],
            quality_score=EDGE_FLOATS[-1 - i % len(EDGE_FLOATS)],
            metadata={
                "kéy": text,
                "k": text,
                "n": [1.5, None, True, -0.0],
                "big": 1e300,
                'q"': "é",
            },
            attributes={"tiny": 5e-324, "nested": {"text": text}},
            tags=[text, "t2"],
        )
        for i, text in enumerate(AWKWARD)
    ]
    assert write_spans(store, rows) == len(rows)
    # racing writers' later copies of two spans of the run: their newest copies count
    write_later_copy(store, [{**rows[0], "status": "error", "name": 'copy, "newer"'}])
    write_later_copy(store, [{**rows[5], "duration_ms": 4321.5}])
    yield {"engine": engine, "store": store, "acme": acme, "url": chdb_session.url(store.database)}
    current.close_span_stores()
    engine.dispose()
    chdb_session.drop(store)


def export(routed, tmp_path, fmt, compression, fields=None, row_limit=MAX_ROWS, **config):
    """Run one export of every acme span; its job and the file's bytes (uncompressed)."""
    scope = Scope(org_id=routed["acme"], role=Role.ADMIN, username="ada")
    config = WorkerConfig(export_dir=tmp_path / "out", **config)
    spec = FilterSpec(relative=None)
    job = create_export(
        routed["engine"],
        scope,
        spec,
        fmt=fmt,
        compression=compression,
        fields=fields,
        row_limit=row_limit,
    )
    assert work_once(routed["engine"], config) == "completed"
    job = get_export(routed["engine"], scope, job["id"])
    raw = (config.export_dir / job["file_name"]).read_bytes()
    return job, gzip.decompress(raw) if compression == "gzip" else raw


def keyset_file(routed, tmp_path, job, fmt) -> bytes:
    """The same job's rows as the explorer's keyset pages read them, through the writers."""
    scope = Scope(org_id=routed["acme"], role=Role.ADMIN, username="ada")
    fields = tuple(job["fields"])
    path = tmp_path / f"keyset.{fmt}"
    writer, _ = open_writer(fmt, "none", path, fields)
    pinned = {"as_of": job["snapshot_at"], "max_id": 2**62}
    for page in iter_span_pages(
        routed["store"].engine,
        scope,
        FilterSpec(relative=None),
        fields=fields,
        page_size=2,
        **pinned,
    ):
        writer.write_rows(page)
    writer.close()
    return path.read_bytes()


def polars_csv(routed, fields) -> bytes:
    out = io.StringIO()
    lines = csv.writer(out, lineterminator="\n")
    lines.writerow(fields)
    for row in expected_rows(routed["store"], routed["acme"]):
        lines.writerow([expected_value(row[f], f, "csv") for f in fields])
    return out.getvalue().encode()


# every plain field but JSON ones: booleans, negative and large integers, text with leading
# spaces and the id, each written by the engine
PLAIN = tuple(n for n, f in FIELDS.items() if f.plain and f.type != "json")


def count_lines_read(monkeypatch) -> list[int]:
    """The lines each of the engine's CSV reads returns, in order, as the job runs."""
    counts: list[int] = []
    real = span_store_csv._read_lines

    def counted(engine, query):
        got, key = real(engine, query)
        counts.append(len(got))
        return got, key

    monkeypatch.setattr(span_store_csv, "_read_lines", counted)
    return counts


@pytest.mark.parametrize(("read_rows", "fields"), [(4, None), (100_000, None), (4, PLAIN)])
def test_csv_by_the_engine_is_the_writers_bytes(on_store, tmp_path, monkeypatch, read_rows, fields):
    pages: list[int] = []
    real = job_attempt.still_mine

    def count_pages(engine, job_id, cfg, progress, rows):
        pages.append(rows)
        return real(engine, job_id, cfg, progress, rows)

    lines_read = count_lines_read(monkeypatch)
    monkeypatch.setattr(job_attempt, "still_mine", count_pages)
    job, got = export(
        on_store,
        tmp_path,
        "csv",
        "gzip",
        fields=fields,
        page_size=3,
        span_store_line_rows=read_rows,
        span_store_read_rows=read_rows,  # the reads' size with long text (PLAIN's prompts)
    )
    assert fields is None or tuple(job["fields"]) == fields
    assert csv_line(tuple(job["fields"])) is not None  # the engine writes this CSV
    want = polars_csv(on_store, job["fields"])
    if fields:
        assert b",true," in got and b",-5," in got and b",2147483647," in got
        assert b",  leading spaces," in got and b", svc," in got
    assert b',"copy, ""newer""",' in got  # the copy's text, quoted
    assert got == want
    assert got == keyset_file(on_store, tmp_path, job, "csv")
    total = job["rows_written"]
    assert total == len(expected_rows(on_store["store"], on_store["acme"]))
    # every line came from the engine's reads of lines (each at most read_rows + 1 long)
    assert sum(min(n, read_rows) for n in lines_read) == total
    assert max(lines_read) <= read_rows + 1 and (read_rows > total or len(lines_read) > 1)
    # the job's pages of exactly 3 rows whatever the reads hold, the last shorter
    assert pages == [min(n, total) for n in range(3, total + 3, 3)]


# floats where Python's repr and the engine's text differ (exponent form, its sign and
# padding, plain digits below 1e-4 and from 1e16) or agree (the rest), at the ends of the range
@pytest.mark.parametrize("fmt", ["jsonl", "json", "parquet"])
def test_the_row_path_reads_the_same_rows(on_store, tmp_path, fmt):
    """Rows from the windows (the engine's JSON text, Parquet's rows): the keyset pages' file."""
    job, got = export(on_store, tmp_path, fmt, "none", page_size=3, span_store_read_rows=4)
    if fmt == "parquet":  # row groups of the job's pages, the keyset's of 2: compare rows
        import pyarrow.parquet as pq

        keyset = pq.read_table(io.BytesIO(keyset_file(on_store, tmp_path, job, fmt)))
        assert pq.read_table(io.BytesIO(got)).to_pylist() == keyset.to_pylist()
    else:
        assert got == keyset_file(on_store, tmp_path, job, fmt)
    names = [r["name"] for r in expected_rows(on_store["store"], on_store["acme"])]
    assert job["rows_written"] == len(names) and 'copy, "newer"' in names


def read_ids(routed, spec=None, page_size=2, read_rows=4, **kwargs) -> list[int]:
    """The ids `store_pages` gives for acme's spans, in order."""
    scope = Scope(org_id=routed["acme"], role=Role.ADMIN, username="ada")
    pages = store_pages(
        routed["store"].engine,
        scope,
        spec or FilterSpec(relative=None),
        [field_column("name")],
        **{"as_of": datetime.now(UTC), "max_id": 2**62, **kwargs},
        page_size=page_size,
        read_rows=read_rows,
    )
    return [row[1] for page in pages for row in page]


def test_a_row_limit_among_copies_still_gives_its_rows(on_store):
    """The windows number the first `row_limit` stored copies; ending inside the tie run with
    its two racing copies, they hold fewer spans than the limit, and the windows after them
    are found for the rest: the first `row_limit` spans, in order."""
    rows = expected_rows(on_store["store"], on_store["acme"])
    through_tie = sum(1 for r in rows if r["start_time"] <= TIE)
    limit = through_tie + 1  # the first copies end at the tie: one span more is wanted
    got = read_ids(on_store, row_limit=limit)  # whole windows: the worker cuts at the limit
    assert len(got) >= limit and got[:limit] == [r["id"] for r in rows[:limit]]
    assert read_ids(on_store) == [r["id"] for r in rows]


@pytest.mark.parametrize("status", ["error", "ok"])
def test_a_filter_on_what_a_later_copy_changed(on_store, status):
    """The windows count every copy the scope and window hold (not the status, which the
    later copy of the tie run's first span changed to error): the reads still judge each
    span by its newest copy."""
    rows = expected_rows(on_store["store"], on_store["acme"])
    spec = FilterSpec(relative=None, statuses=(status,))
    want = [r["id"] for r in rows if r["status"] == status]
    assert want and read_ids(on_store, spec) == want


def test_a_keyset_step_that_does_not_advance_fails(on_store, monkeypatch):
    """A broken keyset step reads the tie run's first rows again and again: the window's
    bound on its reads stops it with a message, not a hang."""
    monkeypatch.setattr(span_store_pages, "after", lambda *args: true())
    with pytest.raises(KeysetStalled, match="keyset step does not advance"):
        read_ids(on_store)


def test_a_narrow_filter_with_a_row_limit_takes_one_statement_of_windows(on_store, monkeypatch):
    """A row limit with a filter the copies mostly fail: the windows number at least K copies
    (`READS_PER_WINDOW` reads' worth), not `row_limit - taken` a round, which advanced a few
    copies a statement (at 1M spans and a limit of 1,000, about 1,250 statements)."""
    calls = []
    real = span_store_pages.windows

    def counted(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(span_store_pages, "windows", counted)
    rows = expected_rows(on_store["store"], on_store["acme"])
    errors = [r["id"] for r in rows if r["status"] == "error"]
    got = read_ids(on_store, FilterSpec(relative=None, statuses=("error",)), row_limit=2)
    assert got[:2] == errors[:2] and got == errors[: len(got)]
    assert len(calls) == 1


def raw_copies(store, org_id: int, where: str = "1") -> int:
    """The stored copies of the org's spans (every copy a row), counted by the engine."""
    return int(
        store.client.command(
            f"SELECT count() FROM {store.table('spans')} WHERE org_id = {org_id} AND {where}"
        )
    )


@pytest.mark.parametrize("status", ["error", "ok"])
def test_the_windows_end_at_matching_copies(on_store, status):
    """The windows count the copies that match the filter on their own columns (status here),
    so a window holds `every` wanted spans rather than `every` copies of any status, and the
    job's progress total is those copies (at least the rows written: progress stays <= 1)."""
    scope = Scope(org_id=on_store["acme"], role=Role.ADMIN, username="ada")
    engine = on_store["store"].engine
    spec = FilterSpec(relative=None, statuses=(status,))
    where = pinned_conditions(engine, spec, datetime.now(UTC), 2**62)
    plan = span_store_pages.windows(engine, scope, where, 2)
    matching = raw_copies(on_store["store"], on_store["acme"], f"status = '{status}'")
    wanted = [
        r for r in expected_rows(on_store["store"], on_store["acme"]) if r["status"] == status
    ]
    assert plan.matching == matching >= len(wanted)
    assert len(plan.ends) <= -(-matching // 2) + 1
    assert read_ids(on_store, spec, page_size=2, read_rows=2) == [r["id"] for r in wanted]


def test_a_row_limit_in_a_tie_run_reads_on(on_store):
    """Ten spans from the tie run on, reads of two, a limit of one: the reads run on through
    the ties by keyset without a bound on their count (it stopped a legitimate read)."""
    spec = FilterSpec(relative=None, start=TIE, end=TIE + timedelta(hours=1))
    rows = expected_rows(on_store["store"], on_store["acme"])
    want = [r["id"] for r in rows if TIE <= r["start_time"] <= TIE + timedelta(hours=1)]
    assert len(want) == 10
    assert read_ids(on_store, spec, page_size=2, read_rows=2) == want
    got = read_ids(on_store, spec, page_size=2, read_rows=2, row_limit=1)
    assert got and got == want[: len(got)]
    # a plan that counted one matching copy (as a later round's may) still reads the window
    last = span_store_pages.EPOCH + timedelta(microseconds=max(epoch(r) for r in rows))
    plan = span_store_pages.Windows([last], False, 1)
    assert read_ids(on_store, spec, page_size=2, read_rows=2, plan=plan) == want


def epoch(row) -> int:
    return (row["start_time"] - span_store_pages.EPOCH) // timedelta(microseconds=1)


@pytest.mark.parametrize("status", ["error", "ok"])
def test_a_span_written_after_the_pin_is_not_read(routed, chdb_session, status):
    """A span written after the pin, of the filtered status or not: the windows and the reads
    leave it out. (A racing writer's later copy of a stored span no longer arrives after a
    pin: the write turns store each span once, and copies from before them are folded at
    open, docs/span-store-internals.md "Each span once".)"""
    store = chdb_session.store("export_pin")
    try:
        acme = routed["acme"]
        rows = [
            span(acme, 1, TIE + timedelta(minutes=i), name=f"s{i}", status="ok") for i in range(5)
        ]
        rows.append(span(acme, 1, TIE + timedelta(hours=1), name="last", status="error"))
        assert write_spans(store, rows) == len(rows)
        time.sleep(0.002)
        pin = datetime.now(UTC)
        time.sleep(0.002)
        late = span(acme, 1, TIE + timedelta(minutes=30), name="after the pin", status=status)
        assert write_spans(store, [late]) == 1
        pinned = {"as_of": pin, "max_id": store_for(store.engine).pin_of_snapshot(0, pin)}
        scope = Scope(org_id=acme, role=Role.ADMIN, username="ada")
        for wanted in ("ok", "error"):
            spec = FilterSpec(relative=None, statuses=(wanted,))
            want = [r["name"] for r in rows if r["status"] == wanted]
            pages = store_pages(
                store.engine,
                scope,
                spec,
                [field_column("name")],
                page_size=2,
                read_rows=2,
                **pinned,
            )
            assert [row[KEYS] for page in pages for row in page] == want
            where = pinned_conditions(store.engine, spec, pin, pinned["max_id"])
            assert span_store_pages.windows(store.engine, scope, where, 2).matching == len(want)
    finally:
        chdb_session.drop(store)


# every listable field (JSON ones, keys of them, expression fields among them), the defaults,
# and a key of a JSON field among engine-written and float fields
ALL_LISTED = tuple(ALL_FIELDS)
KEYED = ("metadata:k", "name", "ttft_ms", "start_time", "metadata", "text_truncated", "id")


@pytest.mark.parametrize("compression", ["gzip", "none"])
@pytest.mark.parametrize("fields", [None, ALL_LISTED, KEYED])
@pytest.mark.parametrize("fmt", ["jsonl", "json"])
def test_json_by_the_engine_is_the_row_paths_bytes(
    on_store, tmp_path, monkeypatch, fmt, fields, compression
):
    """The engine's JSON text (`span_store_json`) over awkward text and floats: the file (the
    .gz too) the same bytes as the writers' row path makes from the same windows, and each
    object's values the span store's newest copies in polars."""
    made = []
    real = span_store_json.json_lines

    def counted(page, plan):
        made.append(len(page))
        return real(page, plan)

    monkeypatch.setattr(span_store_json, "json_lines", counted)
    monkeypatch.setattr(jobs, "NEW_PER_USER_PER_HOUR", 10**6)  # two exports per case here
    reading = {"fields": fields, "page_size": 3, "span_store_read_rows": 4}
    job, got = export(on_store, tmp_path / "engine", fmt, compression, **reading)
    raw = (tmp_path / "engine" / "out" / job["file_name"]).read_bytes()
    assert sum(made) == job["rows_written"]  # the engine wrote every object
    monkeypatch.setattr(page_sources, "json_text_plan", lambda fields: None)
    row_job, want = export(on_store, tmp_path / "rows", fmt, compression, **reading)
    assert got == want
    assert raw == (tmp_path / "rows" / "out" / row_job["file_name"]).read_bytes()
    # independently: the objects' keys and values are the newest copies' in polars
    text = got.decode()
    objects = json.loads(text) if fmt == "json" else [json.loads(x) for x in text.splitlines()]
    rows = expected_rows(on_store["store"], on_store["acme"])
    assert len(objects) == len(rows) == job["rows_written"]
    names = tuple(job["fields"])
    for obj, row in zip(objects, rows, strict=True):
        assert tuple(obj) == names
        for name in set(names) & {"name", "user_id", "error_message", "ttft_ms", "id"}:
            assert obj[name] == row[name]
        if "start_time" in names:
            assert obj["start_time"] == row["start_time"].isoformat(timespec="microseconds")
        if "metadata" in names:
            assert obj["metadata"] == row["metadata"]
        if "metadata:k" in names:
            assert obj["metadata:k"] == row["metadata"].get("k")
    assert text.isascii()
    stored = {o.get("name") for o in objects}
    for awkward in AWKWARD:  # NUL is stored as U+FFFD (`ingest/spanrows.py`)
        assert awkward.replace("\x00", "\ufffd") in stored or "name" not in names


@pytest.mark.parametrize("fields", [None, ALL_LISTED, KEYED])
def test_parquet_by_columns_is_the_row_paths_table(on_store, tmp_path, monkeypatch, fields):
    """Parquet pages made a column at a time (`span_store_parquet`): read back with polars,
    the row path's frame, types included, in the same row groups (the job's pages)."""
    import polars as pl
    import pyarrow.parquet as pq

    made = []  # the rows of each page the columnar path made a table of
    real = page_sources.parquet_plan

    def counted(names):
        plan = real(names)
        table = plan.lines

        def counted_table(page):
            made.append(len(page))
            return table(page)

        return dataclasses.replace(plan, lines=counted_table)

    monkeypatch.setattr(page_sources, "parquet_plan", counted)
    monkeypatch.setattr(jobs, "NEW_PER_USER_PER_HOUR", 10**6)  # two exports per case here
    reading = {"fields": fields, "page_size": 3, "span_store_read_rows": 4}
    job, got = export(on_store, tmp_path / "engine", "parquet", "zstd", **reading)
    assert made and sum(made) == job["rows_written"]  # the columnar path made every page
    monkeypatch.setattr(page_sources, "parquet_plan", lambda names: None)
    _, want = export(on_store, tmp_path / "rows", "parquet", "zstd", **reading)
    frame, expected = pl.read_parquet(io.BytesIO(got)), pl.read_parquet(io.BytesIO(want))
    assert frame.schema == expected.schema and frame.equals(expected, null_equal=True)
    assert pq.read_table(io.BytesIO(got)).schema == pq.read_table(io.BytesIO(want)).schema
    row_groups = pq.ParquetFile(io.BytesIO(got)).num_row_groups
    assert row_groups == pq.ParquetFile(io.BytesIO(want)).num_row_groups == -(-len(frame) // 3)
    rows = expected_rows(on_store["store"], on_store["acme"])
    assert frame["id"].to_list() == [r["id"] for r in rows] if "id" in frame.columns else True
    if "start_time" in frame.columns:
        assert frame["start_time"].to_list() == [r["start_time"] for r in rows]
    assert got == want  # the same table written the same way: the same bytes


def test_an_export_past_the_reads_memory_bound_fails_once_with_the_sentence(
    on_store, tmp_path, monkeypatch
):
    """The read's own memory bound is no passing fault: the job is not retried five times
    with backoff and then blamed on 'the database', it fails at once saying what to narrow.
    (The engine tracks a small read's memory in 4 MiB steps, so the refusal is the driver's
    own error raised where the pages are read, as `reads.over_read_memory` maps it.)"""
    from clickhouse_connect.driver.exceptions import DatabaseError

    from observatory_core.base.errors import QueryTooLarge
    from observatory_core.storage.budget import too_large_message

    def refused(*args, **kwargs):
        try:
            raise DatabaseError("Code: 241. DB::Exception: Query memory limit exceeded: would use")
        except DatabaseError as exc:
            raise QueryTooLarge(too_large_message()) from exc

    monkeypatch.setattr(page_sources, "window_pages", refused)
    monkeypatch.setattr(jobs, "NEW_PER_USER_PER_HOUR", 10**6)
    scope = Scope(org_id=on_store["acme"], role=Role.ADMIN, username="ada")
    config = WorkerConfig(export_dir=tmp_path / "out")
    job = create_export(
        on_store["engine"], scope, FilterSpec(relative=None), fmt="csv", compression="none"
    )
    assert work_once(on_store["engine"], config) == "failed"
    job = get_export(on_store["engine"], scope, job["id"])
    assert job["status"] == "failed" and job["attempts"] == 1, job
    assert "more memory than one read may use" in job["error_message"], job["error_message"]


def test_read_columns_is_the_engines_rows_as_columns(on_store, monkeypatch):
    """`clickhouse/sql.read_columns` (the CSV lines' reads): the same answer as the statement
    through SQLAlchemy, with a bound time, an IN list and text holding a percent sign; a read
    past its memory bound is `QueryTooLarge`, as through SQLAlchemy."""
    from clickhouse_connect.driver.exceptions import DatabaseError
    from sqlalchemy import literal

    from observatory_core.base.errors import QueryTooLarge
    from observatory_core.storage.clickhouse.sql import read_columns
    from observatory_core.storage.dialect import epoch_us
    from observatory_core.storage.schema import spans

    engine = on_store["store"].engine
    scope = Scope(org_id=on_store["acme"], role=Role.ADMIN, username="ada")
    query = (
        scoped_spans(scope, spans.c.name, epoch_us(spans.c.start_time), literal("100%").label("p"))
        .where(spans.c.status.in_(["ok", "error"]), spans.c.start_time >= TIE)
        .order_by(spans.c.start_time, spans.c.id)
    )
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    assert len(rows) >= 10
    assert read_columns(engine, query) == [list(c) for c in zip(*rows, strict=True)]

    def refused(*args, **kwargs):
        raise DatabaseError("Code: 241. DB::Exception: Query memory limit exceeded: would use")

    monkeypatch.setattr(on_store["store"].client, "query", refused)
    with pytest.raises(QueryTooLarge):
        read_columns(engine, query)
