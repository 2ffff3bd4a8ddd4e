"""Four heavy grouped reads at once against the real server: each is capped (or refused with a
message) and the server's memory stays within its bound. Before the caps, one such request
(p99 latency by five dimensions, hourly over 30 days) built millions of gap-filled cells."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import psutil
import pytest
from sqlalchemy import func, select

from observatory_core.ingest.apikeys import create_key
from observatory_core.storage.engine import get_engine
from observatory_core.storage.migrate import upgrade
from observatory_core.storage.schema import spans
from tests.helpers import END, admin_scope, empty_database, load_small_demo, make_org
from tests.live_server import ROOT, running_server

HEAVY = (
    "/api/v1/metrics?series=duration_ms.p99&bucket=1hour&relative=all"
    "&group_by=model&group_by=user_id&group_by=operation&group_by=environment&group_by=status"
)
GROWTH_LIMIT_MB = 500


def _server_process(port: str) -> psutil.Process:
    for child in psutil.Process().children(recursive=True):
        try:
            if "streamlit" in " ".join(child.cmdline()) and port in child.cmdline():
                return child
        except psutil.Error:
            continue
    raise AssertionError("the server process was not found")


def _get(url: str, key: str) -> tuple[int, dict]:
    request = urllib.request.Request(url, headers={"authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(request, timeout=120) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _four_at_once(base: str, keys: list[str]) -> None:
    """The heavy read by four keys at once: each answer capped or refused with what to change,
    and the server's growth (its RSS sampled every 20 ms) under the bound."""
    port = base.rsplit(":", 1)[1]
    server = _server_process(port)
    status, _ = _get(f"{base}/api/v1/metrics?series=request_count.count", keys[0])
    assert status == 200
    before = server.memory_info().rss
    peak = [before]
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], server.memory_info().rss)
            time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    answers: list[tuple[int, dict]] = []
    clients = [
        threading.Thread(target=lambda k=k: answers.append(_get(base + HEAVY, k))) for k in keys
    ]
    for c in clients:
        c.start()
    for c in clients:
        c.join(180)
    done.set()
    watcher.join()
    assert len(answers) == 4
    # at least one was read and capped: four refusals would hold any memory bound
    assert any(status == 200 for status, _ in answers), [s for s, _ in answers]
    for status, body in answers:
        if status == 200:
            data = body["data"]
            groups = {tuple(r[g] for g in data["group_by"]) for r in data["rows"]}
            assert len(groups) <= 101 and data["folded_groups"] > 0
            assert any("(other)" in g for g in groups)
        else:  # refused: with what to change, never a bare failure
            assert status in (400, 503), body
            assert "Narrow" in body["error"]["message"] or "retry" in body["error"]["message"]
    growth_mb = (peak[0] - before) / 2**20
    print(f"heavy reads: statuses {sorted(s for s, _ in answers)}, server grew {growth_mb:.0f} MB")
    assert growth_mb < GROWTH_LIMIT_MB, f"the server grew by {growth_mb:.0f} MB"


def _keys(engine) -> list[str]:
    acme, _ = make_org(engine, "acme")
    return [
        create_key(engine, admin_scope(acme), f"heavy {i}", scopes=("read",), role="developer")
        for i in range(4)
    ]


@pytest.mark.timeout(300)
def test_four_heavy_grouped_reads_at_once_stay_bounded(db_url, tmp_path):
    engine = empty_database(db_url)
    load_small_demo(engine, spans_count=12_000, days=30, seed=3)
    keys = _keys(engine)
    with running_server(db_url, tmp_path) as base:
        _four_at_once(base, keys)


@pytest.mark.timeout(300)
def test_four_heavy_grouped_reads_at_once_stay_bounded_on_the_span_store(tmp_path):
    """The same with the spans in a chDB span store: the server's engine runs the grouped read
    (folded into "(other)" in the engine) within the same bound. The demo is loaded into the
    store by the CLI in a process of its own (a chDB folder is one process's)."""
    url = f"sqlite:///{tmp_path / 'app.db'}"
    store = f"chdb://{tmp_path / 'spans'}"
    engine = get_engine(url)
    upgrade(engine)
    loaded = subprocess.run(
        [sys.executable, "-m", "observatory_core", "demo", "--spans", "12000", "--days", "30"]
        + ["--seed", "3", "--end", END.isoformat()],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": url, "OBSERVATORY_SPAN_STORE": store},
        capture_output=True,
        text=True,
        check=False,
    )
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    with engine.connect() as conn:  # every span in the store: the server reads them there
        assert conn.execute(select(func.count()).select_from(spans)).scalar() == 0
    keys = _keys(engine)
    with running_server(url, tmp_path, OBSERVATORY_SPAN_STORE=store) as base:
        _four_at_once(base, keys)
