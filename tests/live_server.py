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
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """`count` distinct free ports (each held until all are chosen, so none repeats)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@contextmanager
def running_server(url: str, tmp: Path, **env_extra: str):
    """Yield the base URL once /healthz answers; stop the server (gracefully) afterwards."""
    with running_servers([url], tmp, **env_extra) as (base,):
        yield base


@contextmanager
def running_servers(
    urls: list[str], tmp: Path, envs: list[dict[str, str]] | None = None, **env_extra: str
):
    """A server per database URL (one URL may repeat), all started at once (each start is
    mostly waiting on imports and the port): yield their base URLs once each /healthz answers.
    `envs`: settings of each server's own, beside `env_extra`, every server's."""
    started: list[tuple[subprocess.Popen, str, Path, object]] = []
    try:
        own = envs or [{} for _ in urls]
        for url, port, extra in zip(urls, free_ports(len(urls)), own, strict=True):
            env = {
                **os.environ,
                "DATABASE_URL": url,
                "OBSERVATORY_COOKIE_KEY": COOKIE_KEY,
                "OBSERVATORY_EXPORT_DIR": str(tmp / "exports"),
                "OBSERVATORY_DEMO_TRAFFIC": "0",
                **env_extra,
                **extra,
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
            started.append((proc, f"http://127.0.0.1:{port}", log_path, log))
        for proc, base, log_path, _ in started:
            _wait_healthy(proc, base, log_path)
        yield [base for _, base, _, _ in started]
    finally:
        for proc, *_ in started:
            proc.terminate()
        for proc, _, _, log in started:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()


def _wait_healthy(proc: subprocess.Popen, base: str, log_path: Path) -> None:
    deadline = time.time() + 90
    while True:
        try:
            with urllib.request.urlopen(f"{base}/healthz", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            pytest.fail(f"server did not start: {log_path.read_text()[-2000:]}")
        time.sleep(0.1)
