"""Exports in the reader's zone: each time column is followed by its local time with the
offset, the same instant; without a zone the file is as before (UTC columns only)."""

from datetime import datetime

import pytest

from observatory_core.base.zones import Zone
from observatory_core.exports.jobs import create_export, get_export
from observatory_core.exports.worker import work_once
from tests.exports.test_worker import SPEC, explorer_rows, read_back

FIELDS = ["start_time", "span_id", "model", "total_cost_usd"]


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
@pytest.mark.parametrize("zone", ["America/New_York", "Asia/Kathmandu"])
def test_local_time_column_next_to_utc(data, scope, config, fmt, zone):
    job = create_export(
        data, scope, SPEC, fmt=fmt, compression="none", fields=FIELDS, zone=Zone(zone)
    )
    assert work_once(data, config) == "completed"
    job = get_export(data, scope, job["id"])
    got = read_back(config.export_dir / job["file_name"], fmt, "none")
    expected = explorer_rows(data, scope, SPEC, job["snapshot_at"])
    assert len(got) == len(expected) > 300
    if fmt == "csv":
        header = (config.export_dir / job["file_name"]).read_text().splitlines()[0]
        assert header.startswith("start_time,start_time_local,span_id")
    for want, have in zip(expected, got, strict=True):
        local = datetime.fromisoformat(have["start_time_local"])
        assert local == want["start_time"]  # the same instant
        assert local.utcoffset() == Zone(zone).local(want["start_time"]).utcoffset()
        assert have["span_id"] == want["span_id"]


def test_without_a_zone_the_file_has_utc_columns_only(data, scope, config):
    job = create_export(data, scope, SPEC, fmt="jsonl", compression="none", fields=FIELDS)
    assert work_once(data, config) == "completed"
    job = get_export(data, scope, job["id"])
    got = read_back(config.export_dir / job["file_name"], "jsonl", "none")
    assert got and set(got[0]) == set(FIELDS)
