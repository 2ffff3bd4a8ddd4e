"""SIGKILL the worker process in the middle of an export: nothing partial is downloadable,
and after the heartbeat timeout another worker takes the job over and finishes it."""

import os
import signal
import subprocess
import sys
import time
from datetime import timedelta

import polars as pl
import pytest

from observatory_core.exports.housekeeping import maintenance
from observatory_core.exports.jobs import Conflict, create_export, download_target, get_export
from observatory_core.exports.worker import WorkerConfig, work_once
from observatory_core.filters.spec import FilterSpec
from tests.helpers import all_spans, load_small_demo

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def many_spans(engine):
    load_small_demo(engine, spans_count=12_000, days=2, seed=8)
    return engine


def test_killed_worker_leaves_nothing_downloadable_and_the_job_is_resumed(
    many_spans, db_url, orgs_of, tmp_path
):
    engine = many_spans
    scope = orgs_of(engine)
    job = create_export(engine, scope, FilterSpec(relative=None), fmt="csv", compression="gzip")
    export_dir = tmp_path / "exports"
    env = {
        **os.environ,
        "DATABASE_URL": db_url,
        "OBSERVATORY_EXPORT_DIR": str(export_dir),
        "OBSERVATORY_EXPORT_PAGE_SIZE": "10",
        "OBSERVATORY_COOKIE_KEY": "k" * 40,
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "observatory_core", "worker"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.time() + 60
        while get_export(engine, scope, job["id"])["rows_written"] < 100:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.time() < deadline, "the worker never started the export"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    killed = get_export(engine, scope, job["id"])
    assert killed["status"] == "processing" and 0 < killed["progress"] < 1
    assert [p.name for p in export_dir.iterdir() if not p.name.startswith(".")] == []
    with pytest.raises(Conflict, match="is processing"):
        download_target(engine, scope, job["id"], export_dir)

    rescuer = WorkerConfig(
        export_dir=export_dir, heartbeat_timeout=timedelta(seconds=1), worker_id="rescuer"
    )
    time.sleep(1.2)  # let the dead worker's heartbeat go stale
    status = work_once(engine, rescuer)
    done = get_export(engine, scope, job["id"])
    assert (status, done["status"], done["attempts"]) == ("completed", "completed", 2)
    path, _ = download_target(engine, scope, job["id"], export_dir)
    import gzip

    lines = gzip.decompress(path.read_bytes()).decode().splitlines()
    # every span of the org once, none lost or written twice across the kill (the demo's
    # 12,000 spans are spread over its orgs): against the raw rows
    org_spans = all_spans(engine).filter(pl.col("org_id") == scope.org_id).height
    assert len(lines) - 1 == done["rows_written"] == org_spans
    later = maintenance(engine, rescuer, now=done["finished_at"] + timedelta(hours=1))
    assert later["orphans_deleted"] == 1  # the killed worker's partial file
    assert not any(p.name.endswith(".part") for p in export_dir.iterdir())
