"""Alert fixtures: an org with spans built to cross thresholds at a known clock, and a local
HTTP server that receives webhooks (and can be told to fail or to be slow)."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.helpers import make_org, span, write

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


@pytest.fixture
def org(engine):
    org_id, (project,) = make_org(engine, "acme")
    return engine, org_id, project


def add_spans(engine, org_id, project, *, minutes_ago: float, count: int, now=NOW, **fields):
    """`count` spans spread over the minute that ended `minutes_ago` minutes before `now`."""
    start = now - timedelta(minutes=minutes_ago + 1)
    rows = [
        span(org_id, project, start + timedelta(seconds=i * 60 / count), **fields)
        for i in range(count)
    ]
    write(engine, rows)
    return rows


class Hook:
    """What the webhook receiver saw, and how it answers next."""

    def __init__(self):
        self.bodies: list[dict] = []
        self.statuses: list[int] = []  # answers to give, in order; then 200
        self.delay_s = 0.0
        self.location: str | None = None  # sent as Location (with a 3xx status)
        self.hosts: list[str] = []  # the Host header of each request


@pytest.fixture
def allow_hosts(monkeypatch):
    """Set the admin's webhook allow list (OBSERVATORY_WEBHOOK_ALLOW_HOSTS) for one test."""
    from observatory_core.base.settings import get_settings

    def allow(value: str) -> None:
        monkeypatch.setenv("OBSERVATORY_WEBHOOK_ALLOW_HOSTS", value)
        get_settings.cache_clear()

    monkeypatch.delenv("OBSERVATORY_WEBHOOK_ALLOW_HOSTS", raising=False)
    get_settings.cache_clear()
    yield allow
    get_settings.cache_clear()


@pytest.fixture
def loopback_allowed(allow_hosts):
    """The test receivers listen on 127.0.0.1, which webhooks refuse unless an admin allows it."""
    allow_hosts("127.0.0.1")


@pytest.fixture
def webhook():
    hook = Hook()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - the http.server API
            length = int(self.headers["content-length"])
            hook.bodies.append(json.loads(self.rfile.read(length)))
            hook.hosts.append(self.headers["host"])
            time.sleep(hook.delay_s)
            status = hook.statuses.pop(0) if hook.statuses else 200
            try:
                self.send_response(status)
                if hook.location:
                    self.send_header("location", hook.location)
                self.end_headers()
                self.wfile.write(b"ok")
            except BrokenPipeError:  # the sender timed out first, as the slow-receiver test wants
                pass

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    # polled every 20 ms: shutdown() waits for one poll, 0.5 s per test at the default
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    hook.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    yield hook
    server.shutdown()


def firing_rule(engine, org_id, project, url, **kw) -> int:
    """A p95-latency rule over 5 minutes of slow spans, so it fires on the next evaluation."""
    from observatory_core.alerts.rules import build_rule, create_rule
    from tests.helpers import admin_scope

    add_spans(engine, org_id, project, minutes_ago=1, count=10, duration_ms=4000.0)
    spec = build_rule(
        name="slow calls",
        series="duration_ms.p95",
        comparator=">",
        threshold=1000,
        window_s=300,
        webhook_url=url,
        **kw,
    )
    return create_rule(engine, admin_scope(org_id), spec, now=NOW)
