"""One place for settings: environment variables first, then `.streamlit/secrets.toml`.

Defaults suit the embedded mode (SQLite under ./data), so a bare machine runs without
configuration. The core reads the secrets file itself so it never needs Streamlit.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from observatory_core.base.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SECRETS_FILE = PROJECT_ROOT / ".streamlit" / "secrets.toml"


@dataclass(frozen=True)
class Settings:
    database_url: str
    data_dir: Path
    export_dir: Path
    cookie_key: str | None
    cookie_name: str
    cookie_expiry_days: float
    text_max_chars: int
    export_retention_days: float = 7.0
    worker_heartbeat_s: float = 30.0
    worker_poll_s: float = 1.0
    export_page_size: int = 5000
    embedded_worker: bool = True
    ingest_max_body_mb: int = 16
    ingest_max_pending_spans: int = 50_000
    alert_eval_s: float = 5.0  # how often the worker evaluates alert rules
    api_rate_multiplier: float = 1.0  # scales the API's per-role request limits
    demo_traffic_per_s: float = 0.0  # spans per second sent through /v1/traces; 0 is off
    read_budget_s: float = 10.0  # the longest a request's reads may run (API and pages)
    api_heavy_reads: int = 8  # trace and metrics requests running at once per server process
    api_heavy_reads_per_key: int = 2  # ... and per API key (429 past it)
    metrics_max_groups: int = 100  # groups per answer without a limit; the rest fold into "other"
    metrics_max_cells: int = 200_000  # values per metrics answer (buckets x groups x series)
    # spans one answer may group from raw spans by a group-by the rollups do not carry
    metrics_max_raw_spans: int = 100_000
    webhook_allow_hosts: tuple[str, ...] = ()  # internal webhook targets an admin allows
    metrics_token: str | None = None  # bearer token for /ops/metrics; unset: route refused
    metrics_port: int = 0  # a separate port for the metrics (no token); 0 is off
    metrics_bind: str = "127.0.0.1"  # the address that port listens on
    session_idle_minutes: float = 60.0  # a login ends after this long without a page run
    audit_retention_days: float = 365.0  # audit entries older than this are purged
    retention_every_minutes: float = 60.0  # how often the worker deletes expired spans
    public_url: str | None = None  # where people reach the server (links in export webhooks)
    # Issue 17 (docs/scale.md): a ClickHouse span store, chdb:///PATH or clickhouse://...;
    # None keeps spans in DATABASE_URL (read by storage/clickhouse/, checked there)
    span_store: str | None = None

    def require_cookie_key(self) -> str:
        """The login cookie must be signed with a secret that is not in the code."""
        if not self.cookie_key:
            raise ConfigError(
                "No login secret is set: add cookie_key to .streamlit/secrets.toml or set "
                "OBSERVATORY_COOKIE_KEY (running `python -m observatory_core bootstrap` creates one)."
            )
        return self.cookie_key


def _read_secrets(path: Path) -> dict:
    if not path.exists():
        return {}
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML ({exc}); fix or delete the file.") from exc


def _int(name: str, raw: str | int) -> int:
    try:
        return int(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a whole number, got {raw!r}.") from None


def load_settings(env: dict[str, str] | None = None, secrets_file: Path | None = None) -> Settings:
    """Build settings from an environment mapping (default: os.environ) and a secrets file."""
    env = dict(os.environ) if env is None else env
    secrets = _read_secrets(secrets_file or SECRETS_FILE)

    def pick(env_name: str, secret_name: str, default: str | None) -> str | None:
        return env.get(env_name) or secrets.get(secret_name) or default

    def number(env_name: str, secret_name: str, default: str, parse):
        return parse(env_name, pick(env_name, secret_name, default))

    data_dir = Path(pick("OBSERVATORY_DATA_DIR", "data_dir", str(PROJECT_ROOT / "data")))
    default_db = f"sqlite:///{data_dir / 'observatory.db'}"
    return Settings(
        database_url=pick("DATABASE_URL", "database_url", default_db),
        data_dir=data_dir,
        export_dir=Path(pick("OBSERVATORY_EXPORT_DIR", "export_dir", str(data_dir / "exports"))),
        cookie_key=pick("OBSERVATORY_COOKIE_KEY", "cookie_key", None),
        cookie_name=pick("OBSERVATORY_COOKIE_NAME", "cookie_name", "observatory_auth"),
        cookie_expiry_days=number("OBSERVATORY_COOKIE_DAYS", "cookie_expiry_days", "7", _float),
        text_max_chars=number("OBSERVATORY_TEXT_MAX_CHARS", "text_max_chars", "16000", _int),
        export_retention_days=number(
            "OBSERVATORY_EXPORT_RETENTION_DAYS", "export_retention_days", "7", _float
        ),
        worker_heartbeat_s=number(
            "OBSERVATORY_WORKER_HEARTBEAT_S", "worker_heartbeat_s", "30", _float
        ),
        export_page_size=number("OBSERVATORY_EXPORT_PAGE_SIZE", "export_page_size", "5000", _int),
        ingest_max_body_mb=number(
            "OBSERVATORY_INGEST_MAX_BODY_MB", "ingest_max_body_mb", "16", _int
        ),
        ingest_max_pending_spans=number(
            "OBSERVATORY_INGEST_MAX_PENDING", "ingest_max_pending_spans", "50000", _int
        ),
        api_rate_multiplier=number(
            "OBSERVATORY_API_RATE_MULTIPLIER", "api_rate_multiplier", "1", _float
        ),
        alert_eval_s=number("OBSERVATORY_ALERT_EVAL_S", "alert_eval_s", "5", _float),
        read_budget_s=number("OBSERVATORY_READ_BUDGET_S", "read_budget_s", "10", _float),
        api_heavy_reads=number("OBSERVATORY_API_HEAVY_READS", "api_heavy_reads", "8", _int),
        api_heavy_reads_per_key=number(
            "OBSERVATORY_API_HEAVY_READS_PER_KEY", "api_heavy_reads_per_key", "2", _int
        ),
        metrics_max_groups=number(
            "OBSERVATORY_METRICS_MAX_GROUPS", "metrics_max_groups", "100", _int
        ),
        metrics_max_cells=number(
            "OBSERVATORY_METRICS_MAX_CELLS", "metrics_max_cells", "200000", _int
        ),
        metrics_max_raw_spans=number(
            "OBSERVATORY_METRICS_MAX_RAW_SPANS", "metrics_max_raw_spans", "100000", _int
        ),
        demo_traffic_per_s=_rate(pick("OBSERVATORY_DEMO_TRAFFIC", "demo_traffic_per_s", "0")),
        session_idle_minutes=number(
            "OBSERVATORY_SESSION_IDLE_MINUTES", "session_idle_minutes", "60", _float
        ),
        audit_retention_days=number(
            "OBSERVATORY_AUDIT_RETENTION_DAYS", "audit_retention_days", "365", _float
        ),
        retention_every_minutes=number(
            "OBSERVATORY_RETENTION_EVERY_MINUTES", "retention_every_minutes", "60", _float
        ),
        embedded_worker=pick("OBSERVATORY_EMBEDDED_WORKER", "embedded_worker", "1")
        not in ("0", "false", "no"),
        webhook_allow_hosts=_names(
            pick("OBSERVATORY_WEBHOOK_ALLOW_HOSTS", "webhook_allow_hosts", "")
        ),
        metrics_token=pick("OBSERVATORY_METRICS_TOKEN", "metrics_token", None),
        metrics_port=number("OBSERVATORY_METRICS_PORT", "metrics_port", "0", _int),
        metrics_bind=pick("OBSERVATORY_METRICS_BIND", "metrics_bind", "127.0.0.1"),
        public_url=(pick("OBSERVATORY_PUBLIC_URL", "public_url", "") or "").rstrip("/") or None,
        span_store=(pick("OBSERVATORY_SPAN_STORE", "span_store", "") or "").strip() or None,
    )


def _names(raw: str | list) -> tuple[str, ...]:
    """A comma-separated setting (or a TOML list) as a tuple of its non-empty entries."""
    items = raw if isinstance(raw, list) else str(raw).split(",")
    return tuple(str(item).strip() for item in items if str(item).strip())


def _float(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number, got {raw!r}.") from None
    if value <= 0:
        raise ConfigError(f"{name} must be above zero, got {raw!r}.")
    return value


def _rate(raw: str) -> float:
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise ConfigError(
            f"OBSERVATORY_DEMO_TRAFFIC must be spans per second, got {raw!r}."
        ) from None
    if value < 0:
        raise ConfigError("OBSERVATORY_DEMO_TRAFFIC cannot be negative; use 0 to turn it off.")
    return value


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()
