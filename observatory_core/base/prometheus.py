"""Prometheus metrics for operators (docs/operations.md lists every series and how to scrape).

Counters and histograms live in this process and are moved by one-line calls where things
happen (ingest, exports, alerts, webhooks). Gauges that describe shared state (export jobs by
state, worker heartbeat age) are read from the database when scraped, so every server process
answers them alike; pool use and the ingest queue are read from this process when scraped.
"""

from __future__ import annotations

import hmac
import platform
import threading
import time
import tomllib
from pathlib import Path

from prometheus_client import REGISTRY, Counter, Histogram, Info, disable_created_metrics
from prometheus_client.exposition import choose_encoder

disable_created_metrics()  # no `_created` twin of every counter: scrapes stay half the size
MIN_TOKEN_CHARS = 16

SPANS_RECEIVED = Counter(
    "observatory_ingest_spans_received",
    "Spans in OTLP requests that passed authentication and decoding.",
)
SPANS_STORED = Counter(
    "observatory_ingest_spans_stored", "Spans committed to the database by the OTLP writer."
)
SPANS_REFUSED = Counter(
    "observatory_ingest_spans_refused",
    "Spans not stored, by reason: invalid (partial success), overloaded (429), stopping (503), "
    "database_unavailable (503), database_refused (400).",
    ["reason"],
)
INGEST_REQUESTS = Counter(
    "observatory_ingest_requests", "Answers of POST /v1/traces by HTTP status code.", ["code"]
)
INGEST_SECONDS = Histogram(
    "observatory_ingest_request_duration_seconds",
    "Time to answer one OTLP request (one exporter batch), from its first byte to the answer; "
    "a 200 includes the wait for the commit.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
EXPORT_SECONDS = Histogram(
    "observatory_export_job_duration_seconds",
    "Time a worker spent on an export job, by the state it ended in.",
    ["state"],
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600),
)
EXPORT_RETRIES = Counter(
    "observatory_export_retries",
    "Export attempts started over after a transient database error.",
)
ALERT_SECONDS = Histogram(
    "observatory_alert_evaluation_duration_seconds",
    "Time of one alert evaluation round (every rule of every org).",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
ALERT_FAILURES = Counter(
    "observatory_alert_evaluation_failures", "Alert evaluation rounds that raised an error."
)
WEBHOOKS = Counter(
    "observatory_webhook_deliveries",
    "Webhook delivery attempts by outcome: delivered, retry (failed, will be sent again), "
    "failed (gave up after the last attempt), refused (internal target or redirect).",
    ["outcome"],
)
BUILD = Info("observatory_build", "Version of the app, Python and the database driver stack.")

_last_round = {"at": None}  # monotonic time the last alert round ended, in this process
_lock = threading.Lock()


def _version() -> str:
    try:
        pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
        return tomllib.loads(pyproject.read_text())["project"]["version"]
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return "unknown"


def _build_labels() -> dict[str, str]:
    import sqlalchemy

    return {
        "version": _version(),
        "python": platform.python_version(),
        "sqlalchemy": sqlalchemy.__version__,
    }


BUILD.info(_build_labels())
# Every label value from the start, so rate() and absent-series alerts work before a first event.
for _reason in ("invalid", "overloaded", "stopping", "database_unavailable", "database_refused"):
    SPANS_REFUSED.labels(_reason)
for _code in ("200", "400", "401", "413", "415", "429", "503"):
    INGEST_REQUESTS.labels(_code)
for _outcome in ("delivered", "retry", "failed", "refused"):
    WEBHOOKS.labels(_outcome)
for _state in ("completed", "failed", "cancelled"):
    EXPORT_SECONDS.labels(_state)


# One-line hooks for the modules that do the work.


def ingest_decoded(stored_candidates: int, rejected: int) -> None:
    """A request was decoded: its spans were received; the rejected ones are refused."""
    SPANS_RECEIVED.inc(stored_candidates + rejected)
    if rejected:
        SPANS_REFUSED.labels("invalid").inc(rejected)


def ingest_refused(reason: str, count: int) -> None:
    SPANS_REFUSED.labels(reason).inc(count)


def alert_round(seconds: float) -> None:
    ALERT_SECONDS.observe(seconds)
    with _lock:
        _last_round["at"] = time.monotonic()


def last_alert_round() -> float | None:
    """When (monotonic seconds) this process last finished an alert round; None if never."""
    with _lock:
        return _last_round["at"]


def exposition(accept: str | None = None) -> tuple[bytes, str]:
    """Every series of this process in the format the scraper's Accept header asks for
    (Prometheus text, or OpenMetrics), and its content type."""
    encoder, content_type = choose_encoder(accept or "")
    return encoder(REGISTRY), content_type


def token_refusal(configured: str | None, header: str | None) -> tuple[int, str] | None:
    """Why a scrape without the right bearer token is refused (status, message); None if ok."""
    if not configured:
        return 403, (
            "The metrics endpoint is off: set OBSERVATORY_METRICS_TOKEN (at least "
            f"{MIN_TOKEN_CHARS} characters) and send it as 'Authorization: Bearer TOKEN', or set "
            "OBSERVATORY_METRICS_PORT to serve the metrics on a port of their own."
        )
    if len(configured) < MIN_TOKEN_CHARS:
        return 403, (
            f"OBSERVATORY_METRICS_TOKEN is shorter than {MIN_TOKEN_CHARS} characters; set a "
            "longer random token (e.g. `openssl rand -hex 24`)."
        )
    scheme, _, given = (header or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        given.strip().encode(), configured.encode()
    ):
        return 401, "Send the metrics token as 'Authorization: Bearer TOKEN'."
    return None


def serve_on_port(port: int, bind: str) -> None:
    """The metrics on a port of their own (no token: bind it where only Prometheus reaches)."""
    from prometheus_client import start_http_server

    from observatory_core.base.errors import ConfigError

    try:
        start_http_server(port, addr=bind)
    except OSError as exc:
        raise ConfigError(
            f"The metrics port {bind}:{port} cannot be opened ({exc.strerror}); set "
            "OBSERVATORY_METRICS_PORT to a free port (each process on a host needs its own)."
        ) from None
