"""`import FILE`: OTLP/JSON files, and our own exports back into an empty org unchanged."""

from __future__ import annotations

import gzip
import json
from datetime import timedelta

import polars as pl
import pytest

from observatory_core.accounts.permissions import Role
from observatory_core.accounts.scope import Scope
from observatory_core.base.errors import UserError
from observatory_core.exports.jobs import create_export, download_target
from observatory_core.exports.worker import WorkerConfig, work_once
from observatory_core.filters.spec import FilterSpec
from observatory_core.ingest.importer import import_file
from observatory_core.traces.fields import ALL_FIELDS
from tests.helpers import all_spans, load_small_demo, make_org
from tests.ingest.conftest import SAMPLES


def test_otlp_json_file_imports_like_the_receiver_and_only_once(engine, tmp_path):
    org_id, _ = make_org(engine, "acme", ("default",))
    report = import_file(engine, org_id, SAMPLES / "genai.json")
    assert (report.read, report.stored, report.rejected) == (5, 5, 0)
    # the collector's file exporter: one request per line, gzipped
    lines = tmp_path / "traces.jsonl.gz"
    with gzip.open(lines, "wt") as handle:
        for name in ("genai.json", "openinference.json"):
            handle.write(json.dumps(json.loads((SAMPLES / name).read_text())) + "\n")
    again = import_file(engine, org_id, lines, project="imported")
    assert (again.read, again.stored) == (10, 5)  # the genai trace was already there
    df = all_spans(engine)
    assert df.height == 10 and df["input_tokens"].sum() == 2 * (412 + 1288 + 37)


EXPORTED = tuple(f for f in ALL_FIELDS if f not in ("id", "project_id"))


@pytest.mark.parametrize(
    ("fmt", "compression"), [("csv", "gzip"), ("jsonl", "none"), ("parquet", "none")]
)
def test_an_export_imported_into_an_empty_org_gives_the_same_rows(
    engine, tmp_path, fmt, compression
):
    load_small_demo(engine, spans_count=400, days=1, seed=3)
    source = all_spans(engine)
    acme = int(source["org_id"].mode()[0])
    scope = Scope(org_id=acme, role=Role.ADMIN, username="exporter")
    job = create_export(
        engine, scope, FilterSpec(relative=None), fmt=fmt, compression=compression, fields=EXPORTED
    )
    config = WorkerConfig(export_dir=tmp_path / "exports", heartbeat_timeout=timedelta(seconds=30))
    assert work_once(engine, config) == "completed"
    path, _ = download_target(engine, scope, job["id"], config.export_dir)

    empty_org, _ = make_org(engine, "newco", ("restored",))
    report = import_file(engine, empty_org, path, project="restored")
    exported = source.filter(pl.col("org_id") == acme)
    assert (report.read, report.stored, report.rejected) == (exported.height, exported.height, 0)

    key = ["trace_id", "span_id"]
    compared = [f for f in EXPORTED if f != "org_id"]
    back = all_spans(engine).filter(pl.col("org_id") == empty_org).select(compared).sort(key)
    want = exported.select(compared).sort(key)
    if fmt == "csv":  # CSV cannot tell empty text from no text; the export writes both as ""
        for column in ("input_text", "output_text", "error_message"):
            want = want.with_columns(
                pl.when(pl.col(column) == "").then(None).otherwise(pl.col(column)).alias(column)
            )
    assert back.to_dicts() == want.to_dicts()


def test_bad_files_and_bad_rows_get_clear_messages(engine, tmp_path):
    org_id, _ = make_org(engine, "acme", ("default",))
    with pytest.raises(UserError, match="No file"):
        import_file(engine, org_id, tmp_path / "missing.csv")
    odd = tmp_path / "notes.txt"
    odd.write_text("hello")
    with pytest.raises(UserError, match="give a .json"):
        import_file(engine, org_id, odd)
    rows = tmp_path / "rows.csv"
    rows.write_text(
        "trace_id,span_id,start_time,end_time,name,input_tokens\n"
        "0af7651916cd43dd8448eb211c80319c,b7ad6b7169203331,2026-11-20T10:00:00+00:00,2026-11-20T10:00:01+00:00,ok,5\n"
        "nothex,b7ad6b7169203332,2026-11-20T10:00:00+00:00,2026-11-20T10:00:01+00:00,bad id,5\n"
        "0af7651916cd43dd8448eb211c80319c,b7ad6b7169203333,yesterday,2026-11-20T10:00:01+00:00,bad time,5\n"
        "0af7651916cd43dd8448eb211c80319c,b7ad6b7169203334,2026-11-20T10:00:00+00:00,2026-11-20T10:00:01+00:00,bad tokens,many\n"
    )
    report = import_file(engine, org_id, rows)
    assert (report.read, report.stored, report.rejected) == (4, 1, 3)
    assert report.reasons[0].startswith("line 3: trace_id")
    assert report.reasons[1].startswith("line 4:") and report.reasons[2].startswith("line 5:")
    cut = tmp_path / "cut.json"
    cut.write_text('[{"trace_id": "0af7651916cd43dd8448eb211c80319c", "span_id": ')
    with pytest.raises(UserError, match="cannot be read as json"):
        import_file(engine, org_id, cut)
    assert all_spans(engine).height == 1
