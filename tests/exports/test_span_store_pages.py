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
import gzip
import io
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, true

from observatory_core.accounts.permissions import Role
from observatory_core.accounts.scope import Scope
from observatory_core.base.settings import get_settings
from observatory_core.exports import span_store_pages
from observatory_core.exports import worker as worker_module
from observatory_core.exports.jobs import MAX_ROWS, create_export, get_export
from observatory_core.exports.span_store_pages import KeysetStalled, csv_columns, store_pages
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
from observatory_core.traces.fields import field_column
from observatory_core.traces.query import iter_span_pages
from tests.chdb_store import write_later_copy
from tests.exports.test_span_store import expected_rows
from tests.exports.test_worker import expected_value
from tests.helpers import END, load_small_demo, span

TIE = END - timedelta(hours=5, microseconds=123_457)  # one start time for seven spans
NAMES = ["a,b", 'say "hi"', "two\nlines", "carriage\rreturn", "naïve — 漢字", "", "plain"]
FLOATS = [1e-07, 7.8e-07, 2.0, 1e16, 123456789.125, 0.1, None]


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
    assert write_spans(store, rows) == len(rows)
    # racing writers' later copies of two spans of the run: their newest copies count
    write_later_copy(store, [{**rows[0], "status": "error", "name": 'copy, "newer"'}])
    write_later_copy(store, [{**rows[5], "duration_ms": 4321.5}])
    yield {"engine": engine, "store": store, "acme": acme, "url": chdb_session.url(store.database)}
    current.close_span_stores()
    engine.dispose()
    chdb_session.drop(store)


@pytest.fixture
def on_store(routed, monkeypatch):
    monkeypatch.setenv("OBSERVATORY_SPAN_STORE", routed["url"])
    get_settings.cache_clear()
    monkeypatch.setitem(current._OPEN, routed["url"], routed["store"])
    yield routed
    get_settings.cache_clear()


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


@pytest.mark.parametrize(("read_rows", "fields"), [(4, None), (20_000, None), (4, PLAIN)])
def test_csv_by_the_engine_is_the_writers_bytes(on_store, tmp_path, monkeypatch, read_rows, fields):
    pages: list[int] = []
    real = worker_module._still_mine

    def count_pages(engine, job_id, cfg, progress, rows):
        pages.append(rows)
        return real(engine, job_id, cfg, progress, rows)

    monkeypatch.setattr(worker_module, "_still_mine", count_pages)
    job, got = export(
        on_store,
        tmp_path,
        "csv",
        "gzip",
        fields=fields,
        page_size=3,
        span_store_read_rows=read_rows,
    )
    assert fields is None or tuple(job["fields"]) == fields
    assert csv_columns(tuple(job["fields"])) is not None  # the engine writes this CSV
    want = polars_csv(on_store, job["fields"])
    if fields:
        assert b",true," in got and b",-5," in got and b",2147483647," in got
        assert b",  leading spaces," in got and b", svc," in got
    assert b',"copy, ""newer""",' in got  # the copy's text, quoted
    assert got == want
    assert got == keyset_file(on_store, tmp_path, job, "csv")
    total = job["rows_written"]
    assert total == want.count(b"\n") - 1 - 1  # one quoted line break inside a field
    # the job's pages of exactly 3 rows whatever the reads hold, the last shorter
    assert pages == [min(n, total) for n in range(3, total + 3, 3)]


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_the_row_path_reads_the_same_rows(on_store, tmp_path, fmt):
    """Formats the engine does not write: rows from the windows, the keyset pages' file."""
    job, got = export(on_store, tmp_path, fmt, "none", page_size=3, span_store_read_rows=4)
    if fmt == "parquet":  # row groups of the job's pages, the keyset's of 2: compare rows
        import pyarrow.parquet as pq

        keyset = pq.read_table(io.BytesIO(keyset_file(on_store, tmp_path, job, fmt)))
        assert pq.read_table(io.BytesIO(got)).to_pylist() == keyset.to_pylist()
    else:
        assert got == keyset_file(on_store, tmp_path, job, fmt)
    names = [r["name"] for r in expected_rows(on_store["store"], on_store["acme"])]
    assert job["rows_written"] == len(names) and 'copy, "newer"' in names


def read_ids(routed, spec=None, **kwargs) -> list[int]:
    """The ids `store_pages` gives for acme's spans, in order."""
    scope = Scope(org_id=routed["acme"], role=Role.ADMIN, username="ada")
    pages = store_pages(
        routed["store"].engine,
        scope,
        spec or FilterSpec(relative=None),
        [field_column("name")],
        as_of=datetime.now(UTC),
        max_id=2**62,
        page_size=2,
        read_rows=4,
        **kwargs,
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
