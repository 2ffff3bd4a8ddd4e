"""The worker: files read back equal the explorer's rows; cancel, faults, takeover, expiry."""

import csv
import errno
import gzip
import hashlib
import io
import json
from datetime import UTC, datetime, timedelta

import pyarrow.parquet as pq
import pytest
from sqlalchemy import update

from observatory_core.exports import job_attempt, job_claims
from observatory_core.exports.housekeeping import maintenance
from observatory_core.exports.jobs import cancel_export, create_export, get_export
from observatory_core.exports.worker import (
    WorkerConfig,
    claim_next,
    run_job,
    work_once,
)
from observatory_core.filters.spec import FilterSpec
from observatory_core.storage.schema import export_jobs
from observatory_core.traces.query import list_spans

FIELDS = [
    "start_time",
    "trace_id",
    "span_id",
    "name",
    "model",
    "status",
    "duration_ms",
    "ttft_ms",
    "total_tokens",
    "total_cost_usd",
    "tags",
    "metadata",
    "input_text",
    "output_text",
    "text_truncated",
    "quality_score",
]
JSONISH = {"tags", "metadata"}
SPEC = FilterSpec(relative=None, operations=("chat", "execute_tool"))


def explorer_rows(engine, scope, spec, as_of):
    rows, cursor = [], None
    while True:
        page = list_spans(
            engine,
            scope,
            spec,
            fields=FIELDS,
            sort="start_time",
            direction="asc",
            limit=1000,
            cursor=cursor,
            now=as_of,
        )
        rows += page.rows
        if not page.next_cursor:
            return rows
        cursor = page.next_cursor


def read_back(path, fmt, compression):
    raw = path.read_bytes()
    if compression == "gzip" and fmt != "parquet":
        raw = gzip.decompress(raw)
    if fmt == "csv":
        return list(csv.DictReader(io.StringIO(raw.decode())))
    if fmt == "jsonl":
        return [json.loads(line) for line in raw.decode().splitlines()]
    if fmt == "json":
        return json.loads(raw)
    return pq.read_table(io.BytesIO(raw)).to_pylist()


def expected_value(value, field, fmt):
    """What each format holds for a value, written out independently of the writers."""
    if fmt == "parquet":
        return json.dumps(value) if field in JSONISH else value
    if fmt == "csv":
        if value is None:
            return ""
        if field in JSONISH:
            return json.dumps(value, ensure_ascii=False)
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, float):
            return repr(value).removesuffix(".0")
        if isinstance(value, datetime):
            return value.isoformat(timespec="microseconds")
        return str(value)
    return value.isoformat(timespec="microseconds") if isinstance(value, datetime) else value


@pytest.mark.parametrize("compression", ["none", "gzip"])
@pytest.mark.parametrize("fmt", ["csv", "json", "jsonl", "parquet"])
def test_file_holds_exactly_the_explorer_rows(data, scope, config, fmt, compression):
    job = create_export(data, scope, SPEC, fmt=fmt, compression=compression, fields=FIELDS)
    assert work_once(data, config) == "completed"
    job = get_export(data, scope, job["id"])
    path = config.export_dir / job["file_name"]
    expected = explorer_rows(data, scope, SPEC, job["snapshot_at"])
    got = read_back(path, fmt, compression)
    assert len(expected) > 300 and job["rows_written"] == len(got) == len(expected)
    for want, have in zip(expected, got, strict=True):
        assert {f: expected_value(want[f], f, fmt) for f in FIELDS} == {f: have[f] for f in FIELDS}
    assert job["checksum_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert job["file_size"] == path.stat().st_size
    assert (job["progress"], job["error_message"]) == (1.0, None)
    assert job["expires_at"] - job["finished_at"] == pytest.approx(
        config.retention, abs=timedelta(seconds=2)
    )
    assert list(config.export_dir.glob(".*.part")) == []


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])  # csv: on PostgreSQL the limit cuts a COPY page
def test_row_limit_and_snapshot(data, scope, config, fmt):
    job = create_export(data, scope, FilterSpec(relative=None), fmt=fmt, row_limit=250)
    assert work_once(data, config) == "completed"
    done = get_export(data, scope, job["id"])
    assert done["rows_written"] == 250
    lines = (config.export_dir / done["file_name"]).read_text().splitlines()
    assert len(lines) == 250 + (fmt == "csv")  # csv has a header line
    if fmt == "csv":
        expected = explorer_rows(data, scope, FilterSpec(relative=None), done["snapshot_at"])
        assert [line.split(",")[0] for line in lines[1:]] == [
            r["start_time"].isoformat(timespec="microseconds") for r in expected[:250]
        ]


def test_cancel_during_processing_stops_within_one_page(data, scope, config, monkeypatch):
    job = create_export(data, scope, FilterSpec(relative=None), fmt="csv")
    pages = []
    real = job_attempt.still_mine

    def cancel_after_first_page(engine, job_id, cfg, progress, rows):
        pages.append(rows)
        if len(pages) == 1:
            cancel_export(engine, scope, job_id)
        return real(engine, job_id, cfg, progress, rows)

    monkeypatch.setattr(job_attempt, "still_mine", cancel_after_first_page)
    assert work_once(data, config) == "cancelled"
    assert pages == [config.page_size]  # stopped at the first check after the cancel
    assert get_export(data, scope, job["id"])["status"] == "cancelled"
    assert list(config.export_dir.iterdir()) == []  # no partial or final file left


def test_unwritable_export_directory_fails_the_job_with_a_message(data, scope, tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    config = WorkerConfig(export_dir=blocker / "exports")
    job = create_export(data, scope, FilterSpec(relative=None))
    assert work_once(data, config) == "failed"
    failed = get_export(data, scope, job["id"])
    assert (
        failed["error_message"]
        == f"The export directory {config.export_dir} is not writable; an admin must fix its permissions."
    )


def test_full_disk_fails_the_job_and_leaves_no_file(data, scope, config, monkeypatch):
    from observatory_core.exports import writers

    def full(self, data_):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(writers.HashingFile, "write", full)
    job = create_export(data, scope, FilterSpec(relative=None))
    assert work_once(data, config) == "failed"
    assert "is full" in get_export(data, scope, job["id"])["error_message"]
    assert list(config.export_dir.iterdir()) == []


def test_silent_worker_is_taken_over_then_failed_after_three_attempts(data, scope, config):
    job = create_export(data, scope, FilterSpec(relative=None))
    now = datetime.now(UTC)
    a = claim_next(data, config, now=now)
    assert a["id"] == job["id"] and a["attempts"] == 1
    assert claim_next(data, config, now=now + timedelta(seconds=5)) is None  # still fresh
    b_config = WorkerConfig(export_dir=config.export_dir, worker_id="worker-b", page_size=200)
    b = claim_next(data, b_config, now=now + config.heartbeat_timeout + timedelta(seconds=1))
    assert (b["id"], b["attempts"], b["worker_id"]) == (job["id"], 2, "worker-b")
    assert not job_attempt.still_mine(data, job["id"], config, 0.5, 10)  # A lost it
    assert run_job(data, b, b_config) == "completed"
    stuck = create_export(data, scope, FilterSpec(relative=None))
    with data.begin() as conn:
        conn.execute(
            update(export_jobs)
            .where(export_jobs.c.id == stuck["id"])
            .values(
                status="processing",
                attempts=job_claims.MAX_ATTEMPTS,
                heartbeat_at=now - timedelta(hours=1),
            )
        )
    assert claim_next(data, config) is None
    failed = get_export(data, scope, stuck["id"])
    assert failed["status"] == "failed"
    assert f"interrupted {job_claims.MAX_ATTEMPTS} times" in failed["error_message"]


def test_at_most_three_running_jobs_per_org(data, scope, config):
    jobs = [create_export(data, scope, FilterSpec(relative=None)) for _ in range(4)]
    claimed = [
        claim_next(data, WorkerConfig(export_dir=config.export_dir, worker_id=f"w{i}"))
        for i in range(4)
    ]
    assert [c["id"] for c in claimed[:3]] == [j["id"] for j in jobs[:3]]
    assert claimed[3] is None


def test_maintenance_expires_files_and_old_audit(data, scope, config):
    job = create_export(data, scope, FilterSpec(relative=None))
    work_once(data, config)
    done = get_export(data, scope, job["id"])
    path = config.export_dir / done["file_name"]
    assert maintenance(data, config, now=done["expires_at"] - timedelta(seconds=1))["expired"] == 0
    report = maintenance(data, config, now=done["expires_at"] + timedelta(days=366))
    assert report["expired"] == 1 and report["audit_deleted"] >= 1
    assert get_export(data, scope, job["id"])["status"] == "expired"
    assert not path.exists()


@pytest.mark.parametrize("codec", ["zstd", "snappy", "gzip", "none"])
def test_parquet_files_use_the_codec_asked_for(data, scope, config, codec):
    """Parquet compresses its pages itself: the file's column chunks carry the chosen codec and
    read back to the explorer's rows."""
    job = create_export(data, scope, SPEC, fmt="parquet", compression=codec, fields=FIELDS)
    assert work_once(data, config) == "completed"
    job = get_export(data, scope, job["id"])
    path = config.export_dir / job["file_name"]
    assert path.suffix == ".parquet"
    metadata = pq.ParquetFile(path).metadata
    codecs = {
        metadata.row_group(g).column(c).compression
        for g in range(metadata.num_row_groups)
        for c in range(metadata.num_columns)
    }
    assert codecs == {"UNCOMPRESSED" if codec == "none" else codec.upper()}
    assert len(read_back(path, "parquet", codec)) == job["rows_written"] > 300


def test_a_parquet_codec_for_a_text_format_is_refused_with_the_fix(data, scope):
    from observatory_core.base.errors import UserError

    with pytest.raises(UserError, match="zstd compresses Parquet files; for CSV choose gzip"):
        create_export(data, scope, SPEC, fmt="csv", compression="zstd")
    with pytest.raises(UserError, match="Compression 'brotli' is not offered"):
        create_export(data, scope, SPEC, fmt="parquet", compression="brotli")


@pytest.mark.parametrize("fmt", ["csv", "parquet", "jsonl"])
def test_a_metadata_key_is_an_export_column(data, scope, config, fmt):
    """Issue 19: "metadata:<key>" (and "tag:<key>") export as a column of their own, empty
    where the span has no value for the key."""
    fields = ["span_id", "metadata", "tags", "metadata:region", "tag:support"]
    job = create_export(data, scope, SPEC, fmt=fmt, compression="none", fields=fields)
    assert work_once(data, config) == "completed"
    job = get_export(data, scope, job["id"])
    got = read_back(config.export_dir / job["file_name"], fmt, "none")
    assert len(got) > 300
    empty = "" if fmt == "csv" else None
    for row in got:
        meta = json.loads(row["metadata"]) if isinstance(row["metadata"], str) else row["metadata"]
        assert row["metadata:region"] == meta.get("region", empty)
        assert row["tag:support"] == empty  # no demo tag is "support:<value>"
    assert {row["metadata:region"] for row in got} >= {"us-east-1", "eu-west-1"}


def test_an_unknown_export_column_says_what_to_send(data, scope):
    with pytest.raises(Exception, match="metadata:<key>"):
        create_export(data, scope, SPEC, fmt="csv", fields=["span_id", "metadata:no space"])
