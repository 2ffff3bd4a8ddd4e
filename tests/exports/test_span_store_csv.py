"""The span store's CSV made by the engine (`exports/span_store_csv.py`):
the same spans written to SQLite or PostgreSQL (the row path, COPY on PostgreSQL) and to the
span store (chDB), exported by the same job, byte for byte."""

from __future__ import annotations

import gzip
from datetime import timedelta

import pytest

from observatory_core.accounts.permissions import Role
from observatory_core.accounts.scope import Scope
from observatory_core.base.settings import get_settings
from observatory_core.exports import span_store_csv
from observatory_core.exports.jobs import MAX_ROWS, create_export, get_export
from observatory_core.exports.worker import WorkerConfig, work_once
from observatory_core.filters.spec import FilterSpec
from observatory_core.semantic.fields import FIELDS
from observatory_core.storage.clickhouse import current
from observatory_core.storage.clickhouse.writes import write_spans as store_write
from tests.chdb_store import write_later_copy
from tests.exports.test_span_store_pages import count_lines_read
from tests.helpers import END, make_org, span, write

FLOATS = [
    1e-07,
    7.8e-07,
    -7.8e-07,
    1e-06,
    9.99999e-07,
    2.5e-05,
    -2.5e-05,
    1e-05,
    9.999999999999999e-05,
    0.0001,
    0.1,
    0.30000000000000004,
    -1 / 3,
    3.0,
    -3.0,
    123456789.125,
    1e15,
    9999999999999998.0,
    1e16,
    -1.5e16,
    1.2345678901234568e17,
    1e21,
    1e22,
    1.5e150,
    1e-150,
    0.0,
    None,
]
TEXTS = [
    "a,b",
    'say "hi"',
    "two\nlines",
    "crlf\r\nend",
    "carriage\rreturn",
    " lead and trail ",
    "tab\there",
    "=1+2",
    "+cmd",
    "-1",
    "@sum(A1)",
    "naïve — 漢字 😀",
    "",
    None,
    "back\\slash",
    '"',
    ",",
    "\n",
    "plain",
]
# every plain non-JSON field but the id (the span store's id is a hash of the identity)
PLAIN = tuple(n for n, f in FIELDS.items() if f.plain and f.type != "json" and n != "id")


def rows_for(org: int, project: int) -> list[dict]:
    base = END - timedelta(hours=3)
    rows = []
    for i in range(max(len(FLOATS), len(TEXTS))):
        text = TEXTS[i % len(TEXTS)]
        rows.append(
            span(
                org,
                project,
                base + timedelta(seconds=i, microseconds=0 if i % 3 == 0 else 1001 * i),
                name=text if text is not None else "n",
                error_message=text,
                user_id=text,
                service_name=text,
                input_text=(text or "") * 50,
                ttft_ms=FLOATS[i % len(FLOATS)],
                quality_score=FLOATS[-1 - i % len(FLOATS)],
                input_cost_usd=FLOATS[(i + 5) % len(FLOATS)] or 1.0,
                text_truncated=bool(i % 2),
                input_tokens=-i,
                tags=["t1", "t,2"] if i % 2 else [],
                metadata={"k": "v"} if i % 3 == 0 else {},
            )
        )
    return rows


def _export(engine, scope, tmp_path, compression, spec, fields, **config):
    config = WorkerConfig(export_dir=tmp_path, **{"page_size": 4, **config})
    job = create_export(
        engine,
        scope,
        spec,
        fmt="csv",
        compression=compression,
        fields=fields,
        row_limit=MAX_ROWS,
    )
    assert work_once(engine, config) == "completed", get_export(engine, scope, job["id"])
    job = get_export(engine, scope, job["id"])
    return job, (config.export_dir / job["file_name"]).read_bytes()


@pytest.fixture(scope="module")
def csv_store(chdb_session):
    """The module's span store, and the tables it opened empty: opening one (its schema's
    statements) costs seconds, emptying those tables again a fraction of that."""
    store = chdb_session.store("revcsv")
    tables = store.client.query(
        "SELECT name FROM system.tables WHERE database = {db:String} "
        "AND engine NOT LIKE '%View' AND total_rows = 0",
        parameters={"db": store.database},
    ).result_rows
    yield store, [name for (name,) in tables]
    chdb_session.drop(store)


def emptied(csv_store):
    """The module's span store with the tables it opened empty emptied again."""
    store, empty_tables = csv_store
    for name in empty_tables:
        store.client.command(f"TRUNCATE TABLE {store.database}.`{name}`")
    assert store.client.query(f"SELECT count() FROM {store.table('spans')}").result_rows == [(0,)]
    return store


@pytest.fixture
def both(engine, csv_store, chdb_session, monkeypatch, request):
    """The same spans in `engine` (SQLite or PostgreSQL) and in a span store of their own
    (the module's, emptied: as a fresh one)."""
    org, (project,) = make_org(engine, "revcsv")
    rows = rows_for(org, project)
    write(engine, rows)
    store = emptied(csv_store)
    assert store_write(store, [dict(r) for r in rows]) == len(rows)
    url = chdb_session.url(store.database)

    def on_store():
        monkeypatch.setenv("OBSERVATORY_SPAN_STORE", url)
        get_settings.cache_clear()
        monkeypatch.setitem(current._OPEN, url, store)

    yield {"engine": engine, "org": org, "store": store, "on_store": on_store, "rows": rows}
    get_settings.cache_clear()


def want_text(raw: bytes, compression: str) -> bytes:
    return gzip.decompress(raw) if compression == "gzip" else raw


@pytest.mark.parametrize("compression", ["none", "gzip"])
@pytest.mark.parametrize("fields", [PLAIN, ("start_time", "name", "ttft_ms", "quality_score")])
def test_span_store_csv_is_the_databases_bytes(both, tmp_path, compression, fields):
    scope = Scope(org_id=both["org"], role=Role.ADMIN, username="ada")
    spec = FilterSpec(relative=None)
    assert span_store_csv.csv_line(fields) is not None  # the engine writes these lines
    _, want = _export(both["engine"], scope, tmp_path / "db", compression, spec, fields)
    both["on_store"]()
    job, got = _export(both["engine"], scope, tmp_path / "st", compression, spec, fields)
    assert job["rows_written"] == len(both["rows"])
    text = gzip.decompress(got) if compression == "gzip" else got
    if both["engine"].dialect.name == "postgresql" and text != want_text(want, compression):
        # COPY quotes a bare CR and writes 1e15 <= |x| < 1e16 as 9.999999999999998e+15
        # where csv.writer and repr do not: the row path and the span store agree
        pytest.xfail("PostgreSQL's COPY text differs from the row path's (not the span store)")
    assert text.splitlines(True) == want_text(want, compression).splitlines(True)
    if compression == "none":  # a .gz's bytes follow its writes' sizes (a read's lines at once)
        assert got == want


def test_an_export_matching_no_span_on_the_store(both, tmp_path):
    """A filter no span matches: windows over the copies, one read of no lines."""
    scope = Scope(org_id=both["org"], role=Role.ADMIN, username="ada")
    spec = FilterSpec(relative=None, statuses=("error",))
    fields = ("start_time", "name", "ttft_ms")
    _, want = _export(both["engine"], scope, tmp_path / "db", "none", spec, fields)
    both["on_store"]()
    job, got = _export(both["engine"], scope, tmp_path / "st", "none", spec, fields)
    assert job["rows_written"] == 0
    assert got == want == b"start_time,name,ttft_ms\n"


def test_a_window_whose_span_moved_out_of_the_filter(both, tmp_path):
    """A span's older copy matches the filter, its newest does not: a window of no lines."""
    scope = Scope(org_id=both["org"], role=Role.ADMIN, username="ada")
    first = both["rows"][0]
    write_later_copy(both["store"], [{**first, "status": "error"}])
    spec = FilterSpec(relative=None, statuses=("ok",))
    fields = ("start_time", "name", "ttft_ms")
    both["on_store"]()
    job, got = _export(
        both["engine"],
        scope,
        tmp_path / "st",
        "none",
        spec,
        fields,
        span_store_line_rows=1,
        page_size=1,
    )
    assert job["rows_written"] == len(both["rows"]) - 1
    assert b'"a,b"' not in got.split(b"\n")[1]


def test_read_columns_of_no_rows_is_a_list_per_column(both):
    """`read_columns` of a statement no row answers: one empty list per selected column
    (`span_store_csv._read_lines` unpacks three), not an empty list."""
    from sqlalchemy import literal

    from observatory_core.accounts.scope import scoped_spans
    from observatory_core.storage.clickhouse.sql import read_columns
    from observatory_core.storage.schema import spans

    scope = Scope(org_id=both["org"], role=Role.ADMIN, username="ada")
    query = scoped_spans(scope, spans.c.id, spans.c.name, literal("x").label("l")).where(
        spans.c.status == "no such status"
    )
    assert read_columns(both["store"].engine, query) == [[], [], []]


def test_negative_nan_is_pythons_nan(both):
    """A NaN with its sign bit set (what `-(0/0)` makes, or a client's bits): Python's repr
    of any NaN is `nan`; the engine's `toString` of this one is `-nan`."""
    from sqlalchemy import Float, column, select, text

    from observatory_core.exports.writers import csv_text
    from observatory_core.storage.clickhouse.sql import read_columns

    floats = (
        text("SELECT -(0/0) AS x UNION ALL SELECT -inf AS x")
        .columns(column("x", Float))
        .subquery("f")
    )
    query = select(span_store_csv._float_text(floats.c.x).label("t")).order_by("t")
    (texts,) = read_columns(both["store"].engine, query)
    assert sorted(texts) == sorted([csv_text(float("nan"), "ttft_ms"), "-inf"])


LONG = 16_000  # the text columns' cut at ingestion (OBSERVATORY_TEXT_MAX_CHARS' default)


def test_a_read_of_long_prompts_stays_within_the_engines_memory_bound(
    sqlite_engine, csv_store, chdb_session, monkeypatch, tmp_path
):
    """Reads bounded by a count of lines, not bytes: with the prompts exported (16,000
    characters each way, the ingestion's cut) one read of `span_store_line_rows` lines holds
    that many times 32 KB. Scaled down 50x (2,000 lines against 400 rows, the ratio of
    100,000 to 20,000; the read bound 64 MB for 2 GB): JSON lines reads of 400 rows pass,
    CSV's reads of 2,000 lines must too."""
    from observatory_core.storage.clickhouse import reads

    org, (project,) = make_org(sqlite_engine, "revlong")
    store = emptied(csv_store)
    base = END - timedelta(hours=2)
    rows = [
        span(
            org,
            project,
            base + timedelta(milliseconds=i),
            input_text=f"{i:08d}" + "p" * (LONG - 8),
            output_text=f"{i:08d}" + "o" * (LONG - 8),
        )
        for i in range(2_000)
    ]
    assert store_write(store, rows) == len(rows)
    url = chdb_session.url(store.database)
    monkeypatch.setenv("OBSERVATORY_SPAN_STORE", url)
    get_settings.cache_clear()
    monkeypatch.setitem(current._OPEN, url, store)
    monkeypatch.setattr(reads, "READ_MEMORY", 64 * 1024**2)
    scope = Scope(org_id=org, role=Role.ADMIN, username="ada")
    fields = ("start_time", "span_id", "input_text", "output_text")
    config = {"page_size": 100, "span_store_read_rows": 400, "span_store_line_rows": 2_000}
    try:
        for fmt in ("jsonl", "csv"):
            job = create_export(
                sqlite_engine,
                scope,
                FilterSpec(relative=None),
                fmt=fmt,
                compression="none",
                fields=fields,
                row_limit=MAX_ROWS,
            )
            cfg = WorkerConfig(export_dir=tmp_path / fmt, **config)
            status = work_once(sqlite_engine, cfg)
            job = get_export(sqlite_engine, scope, job["id"])
            assert (fmt, status) == (fmt, "completed"), job["error_message"]
            assert job["rows_written"] == len(rows)
    finally:
        get_settings.cache_clear()


@pytest.mark.parametrize("role", [Role.BILLING, Role.DEVELOPER])
@pytest.mark.parametrize("row_limit", [5, MAX_ROWS])
def test_a_roles_default_columns_and_a_limit_are_the_databases(both, tmp_path, role, row_limit):
    """The job's default columns for a role that may not see the prompts (billing), and a
    row limit inside the spans: the same file from the span store as from SQLite."""
    if both["engine"].dialect.name == "postgresql":
        pytest.skip("COPY's own text (see test_span_store_csv_is_the_databases_bytes)")
    scope = Scope(org_id=both["org"], role=role, username="bo")
    spec = FilterSpec(relative=None)

    def run(folder):
        job = create_export(
            both["engine"], scope, spec, fmt="csv", compression="none", row_limit=row_limit
        )
        config = WorkerConfig(export_dir=tmp_path / folder, page_size=2, span_store_line_rows=3)
        assert work_once(both["engine"], config) == "completed"
        job = get_export(both["engine"], scope, job["id"])
        return job, (config.export_dir / job["file_name"]).read_bytes()

    want_job, want = run("db")
    both["on_store"]()
    job, got = run("st")
    assert "input_text" not in job["fields"] or role is not Role.BILLING
    assert span_store_csv.csv_line(tuple(job["fields"])) is not None
    assert job["fields"] == want_job["fields"]
    assert job["rows_written"] == min(row_limit, len(both["rows"]))
    assert got == want


SPECS = {
    "window": dict(start=END - timedelta(hours=3, seconds=-5), end=END - timedelta(hours=2)),
    "in_lists": dict(user_ids=("a,b", 'say "hi"', "=1+2"), statuses=("ok",)),
    "ranges": dict(min_cost_usd=1e-06, max_duration_ms=1000.0),
    "tags": dict(tags_any=("t,2",)),
    "metadata": dict(metadata=(("k", "v"),)),
    "search": dict(search="lines"),
}


@pytest.mark.parametrize("name", list(SPECS))
def test_a_filtered_csv_is_the_databases(both, tmp_path, name):
    """A job's filters bound into the lines' reads (`read_columns` binds them itself): the
    same spans, the same file as from SQLite."""
    if both["engine"].dialect.name == "postgresql":
        pytest.skip("COPY's own text (see test_span_store_csv_is_the_databases_bytes)")
    scope = Scope(org_id=both["org"], role=Role.ADMIN, username="ada")
    spec = FilterSpec(relative=None, **SPECS[name])
    fields = ("start_time", "name", "user_id", "ttft_ms")
    _, want = _export(both["engine"], scope, tmp_path / "db", "none", spec, fields)
    both["on_store"]()
    job, got = _export(
        both["engine"], scope, tmp_path / "st", "none", spec, fields, span_store_line_rows=3
    )
    assert 0 < job["rows_written"] < len(both["rows"]), job["rows_written"]
    assert got == want


def test_a_small_row_limit_reads_few_lines(both, tmp_path, monkeypatch):
    """A job of 5 rows: its reads ask the engine for the lines it may write (the limit, plus
    the keyset's one more), not a whole read of `span_store_line_rows` lines."""
    if both["engine"].dialect.name == "postgresql":
        pytest.skip("the span store's reads alone")
    read = count_lines_read(monkeypatch)
    scope = Scope(org_id=both["org"], role=Role.ADMIN, username="ada")
    both["on_store"]()
    job = create_export(
        both["engine"],
        scope,
        FilterSpec(relative=None),
        fmt="csv",
        compression="none",
        fields=("start_time", "name"),
        row_limit=5,
    )
    assert work_once(both["engine"], WorkerConfig(export_dir=tmp_path)) == "completed"
    assert get_export(both["engine"], scope, job["id"])["rows_written"] == 5
    assert sum(read) <= 6, read


FLOAT_CORPUS = [
    *(
        sign * v
        for sign in (1, -1)
        for v in (
            5e-324,
            2.2250738585072014e-308,
            1e-100,
            1.5e-10,
            7.8e-07,
            1e-06,
            9.99999e-07,
            1.08e-06,
            2.5e-05,
            1e-05,
            9.999999999999999e-05,
            0.0001,
            0.00010000000000000002,
            0.1,
            0.30000000000000004,
            1 / 3,
            123.0,
            123456789.125,
            1e15,
            9999999999999998.0,
            1e16,
            1.5e16,
            1.2345678901234568e17,
            1e20,
            1e21,
            1e22,
            1.5e300,
            1.7976931348623157e308,
        )
    ),
    0.0,
    -0.0,
    float("inf"),
    float("-inf"),
    float("nan"),
    None,
]


def test_the_engines_float_text_is_pythons(csv_store):
    """`span_store_csv._float_text` over floats where the notations differ and where they
    agree, and over 3,000 of every size (random bits, seeded): the text `csv_text` writes
    (Python's repr without a trailing ".0")."""
    import random
    import struct

    from sqlalchemy import Float, Integer, column, select, text

    from observatory_core.exports.writers import csv_text
    from observatory_core.storage.clickhouse.sql import read_columns

    draw = random.Random(17)
    values = [*FLOAT_CORPUS]
    for _ in range(1_000):
        values.append(struct.unpack("<d", struct.pack("<Q", draw.getrandbits(64)))[0])
        values.append(round(draw.random() * 10 ** draw.randint(-8, 18), draw.randint(0, 12)))
        values.append(draw.random() * 10 ** draw.randint(-25, 25))
    listed = ", ".join("NULL" if v is None else f"toFloat64('{v!r}')" for v in values)
    floats = (
        text(
            "SELECT p.1 AS i, p.2 AS x FROM (SELECT arrayJoin(arrayZip(arrayEnumerate(a), a)) "
            f"AS p FROM (SELECT [{listed}] AS a))"
        )
        .columns(column("i", Integer), column("x", Float))
        .subquery("floats")
    )
    query = select(floats.c.i, span_store_csv._float_text(floats.c.x)).order_by(floats.c.i)
    order, texts = read_columns(csv_store[0].engine, query)
    assert order == list(range(1, len(values) + 1))
    assert texts == [csv_text(v, "ttft_ms") for v in values]
    assert "1e-05" in texts and "-1.5e+16" in texts and "1e+22" in texts and "nan" in texts
