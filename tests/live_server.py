"""Start the real server (`streamlit run server.py`, as `make run` does) for a test session."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COOKIE_KEY = "e2e-cookie-key-0123456789abcdefghijklmnop"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_server(url: str, tmp: Path, **env_extra: str):
    """Yield the base URL once /healthz answers; stop the server (gracefully) afterwards."""
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "OBSERVATORY_COOKIE_KEY": COOKIE_KEY,
        "OBSERVATORY_EXPORT_DIR": str(tmp / "exports"),
        "OBSERVATORY_DEMO_TRAFFIC": "0",
        **env_extra,
    }
    log_path = tmp / f"server-{port}.log"
    log = open(log_path, "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "server.py"]
        + ["--server.port", str(port), "--server.headless", "true"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while True:
        try:
            with urllib.request.urlopen(f"{base}/healthz", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            pytest.fail(f"server did not start: {log_path.read_text()[-2000:]}")
        time.sleep(0.5)
    try:
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
