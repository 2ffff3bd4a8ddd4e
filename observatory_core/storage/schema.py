"""The one schema for SQLite and PostgreSQL (SQLAlchemy Core). Alembic migrations follow it.

Span indexes start with org_id because every read is scoped to one org; time comes next
because every screen is a time window.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    literal_column,
    text,
)
from sqlalchemy.sql.expression import ColumnElement

from observatory_core.semantic.fields import (  # noqa: F401 (declared there)
    DIMENSION_SLOTS,
    OPERATIONS,
    STATUSES,
)
from observatory_core.storage.metadata import metadata

# The rollup tables live in their own module (on the same metadata), named here as before.
from observatory_core.storage.rollup_tables import (  # noqa: F401
    ACTOR_GRAINS,
    ACTOR_KINDS,
    ACTOR_ROLLUPS,
    ROLLUP_COUNTS,
    ROLLUP_DIMENSIONS,
    ROLLUP_GRAINS,
    ROLLUP_MEASURES,
    ROLLUPS,
    org_dimensions,
)
from observatory_core.storage.types import BigId, JsonB, UtcDateTime

orgs = Table(
    "orgs",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("slug", String(64), nullable=False, unique=True),
    Column("name", String(200), nullable=False),
    Column("created_at", UtcDateTime, nullable=False, default=lambda: datetime.now(UTC)),
    # Added by migration 0010: bumped by every change of who may do what in the org (a key
    # revoked, a user disabled or given another role), so every server process drops what it
    # remembered about the org's keys on its next request (observatory_core/accounts/authversion.py).
    Column("auth_version", Integer, nullable=False, server_default="0"),
    # Added by migration 0013: set aside one span of each call instrumented twice
    # (docs/ingestion.md, "A call instrumented twice"); an admin may turn it off.
    Column("dedup_enabled", Boolean, nullable=False, server_default="1"),
    # Added by migration 0017: days spans and rollups are kept (NULL: forever); the worker
    # deletes what is older (storage/retention.py, docs/operations.md "Retention").
    Column("span_retention_days", Integer),
    Column("rollup_retention_days", Integer),
)

projects = Table(
    "projects",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("org_id", Integer, ForeignKey("orgs.id", ondelete="CASCADE"), nullable=False),
    Column("slug", String(64), nullable=False),
    Column("name", String(200), nullable=False),
    # migration 0017: this project's span retention in days (NULL: the org's)
    Column("span_retention_days", Integer),
    UniqueConstraint("org_id", "slug", name="uq_projects_org_slug"),
)

users = Table(
    "users",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("org_id", Integer, ForeignKey("orgs.id", ondelete="CASCADE"), nullable=False),
    Column("username", String(64), nullable=False, unique=True),
    Column("name", String(200), nullable=False),
    Column("email", String(320), nullable=False),
    Column("password_hash", String(100), nullable=False),
    Column("role", String(16), nullable=False),
    Column("disabled", Boolean, nullable=False, server_default="0"),
    # IANA name the user chose for their times and days; NULL: the browser's (accounts/preferences)
    Column("time_zone", String(64), nullable=True),
)

# A user with no rows here may see every project of their org.
user_projects = Table(
    "user_projects",
    metadata,
    Column("user_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Column("project_id", Integer, ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True),
)

# Org-specific prices override the maintained table from `effective_from` on.
model_prices = Table(
    "model_prices",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("org_id", Integer, ForeignKey("orgs.id", ondelete="CASCADE"), nullable=False),
    Column("provider", String(64), nullable=False),
    Column("model", String(200), nullable=False),
    Column("input_usd_per_mtok", Float, nullable=False),
    Column("output_usd_per_mtok", Float, nullable=False),
    Column("effective_from", UtcDateTime, nullable=False),
    UniqueConstraint("org_id", "provider", "model", "effective_from", name="uq_model_prices_key"),
)

spans = Table(
    "spans",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    # identity
    Column("org_id", Integer, ForeignKey("orgs.id", ondelete="CASCADE"), nullable=False),
    Column("project_id", Integer, ForeignKey("projects.id", ondelete="CASCADE"), nullable=False),
    Column("trace_id", String(32), nullable=False),
    Column("span_id", String(16), nullable=False),
    Column("parent_span_id", String(16)),
    # time
    Column("start_time", UtcDateTime, nullable=False),
    Column("end_time", UtcDateTime, nullable=False),
    Column("duration_ms", Float, nullable=False),
    Column("ttft_ms", Float),
    # what
    Column("name", String(200), nullable=False),
    Column("operation", String(32), nullable=False),
    Column("provider", String(64)),
    Column("model", String(200)),
    Column("environment", String(64), nullable=False, server_default="default"),
    Column("service_name", String(200)),
    # who
    Column("user_id", String(200)),
    Column("session_id", String(200)),
    # outcome
    Column("status", String(8), nullable=False),
    Column("error_type", String(200)),
    Column("error_message", Text),
    Column("finish_reason", String(64)),
    # usage
    Column("input_tokens", Integer, nullable=False, server_default="0"),
    Column("output_tokens", Integer, nullable=False, server_default="0"),
    Column("total_tokens", Integer, nullable=False, server_default="0"),
    Column("input_cost_usd", Float, nullable=False, server_default="0"),
    Column("output_cost_usd", Float, nullable=False, server_default="0"),
    Column("total_cost_usd", Float, nullable=False, server_default="0"),
    Column("cost_source", String(16), nullable=False),
    # content
    Column("input_text", Text),
    Column("output_text", Text),
    Column("text_truncated", Boolean, nullable=False, server_default="0"),
    # extra
    Column("tags", JsonB, nullable=False),
    Column("metadata", JsonB, nullable=False),
    Column("attributes", JsonB, nullable=False),
    Column("quality_score", Float),
    # Added by migration 0013 (docs/ingestion.md, "A call instrumented twice"): the
    # instrumentation scope that sent the span, and, on a span set aside as the twin of
    # another, the span (and trace) id of the one that counts. A span with `duplicate_of`
    # set is left out of every figure.
    Column("scope_name", String(200)),
    Column("duplicate_of", String(16)),
    Column("duplicate_trace_id", String(32)),
    # an LLM call (a request): decided at ingest from the operation, or for an `other` span
    # from its model, tokens and the spans below it (migration 0014, ingest/llm_calls.py)
    Column("llm_call", Boolean, nullable=False, server_default="0"),
    # migration 0016 (issue 19): the values of the keys an admin declared as dimensions
    # (`org_dimensions`), one slot each: '' for a span without a value, NULL not yet extracted
    *(Column(slot, String(200)) for slot in DIMENSION_SLOTS),
    # On PostgreSQL (migration 0017) spans are partitioned by month of start_time, and the
    # primary key and this key also hold start_time (a partitioned table's keys must hold the
    # partition key); the ingest write still skips a stored (org, trace, span) id whatever its
    # start time (storage/stores/postgres.py).
    UniqueConstraint("org_id", "trace_id", "span_id", name="uq_spans_org_trace_span"),
    # trace_id too (migration 0008): "traces with a span in this window" reads the index only
    Index("ix_spans_org_start_trace", "org_id", "start_time", "trace_id"),
    Index("ix_spans_org_project_start", "org_id", "project_id", "start_time"),
    Index("ix_spans_org_session", "org_id", "session_id"),
    Index("ix_spans_org_user", "org_id", "user_id"),
    # Added by migration 0002 (full-text indexes live there too, per dialect).
    Index(
        "ix_spans_org_roots",
        "org_id",
        "start_time",
        sqlite_where=text("parent_span_id IS NULL"),
        postgresql_where=text("parent_span_id IS NULL"),
    ),
    Index("ix_spans_org_duration", "org_id", "duration_ms"),
    Index("ix_spans_org_cost", "org_id", "total_cost_usd"),
    Index("ix_spans_org_tokens", "org_id", "total_tokens"),  # migration 0020
    # Added by migration 0004.
    Index("ix_spans_org_status_start", "org_id", "status", "start_time"),
    Index("ix_spans_org_model_start", "org_id", "model", "start_time"),
    # Added by migration 0013: the duplicates set aside, for the Admin page's count
    Index(
        "ix_spans_org_duplicates",
        "org_id",
        "start_time",
        sqlite_where=text("duplicate_of IS NOT NULL"),
        postgresql_where=text("duplicate_of IS NOT NULL"),
    ),
    # Added by migration 0019: the columns the Users and Sessions lists read, for the spans
    # that name a user (a session) and count, so a window is read from the index alone
    # (traces/users.py, traces/sessions.py).
    Index(
        "ix_spans_org_users_window",
        "org_id",
        "start_time",
        "user_id",
        "project_id",
        "trace_id",
        "llm_call",
        "status",
        "total_tokens",
        "total_cost_usd",
        sqlite_where=text("user_id IS NOT NULL AND duplicate_of IS NULL"),
        postgresql_where=text("user_id IS NOT NULL AND duplicate_of IS NULL"),
    ),
    Index(
        "ix_spans_org_sessions_window",
        "org_id",
        "start_time",
        "session_id",
        "project_id",
        "trace_id",
        "user_id",
        sqlite_where=text("session_id IS NOT NULL AND duplicate_of IS NULL"),
        postgresql_where=text("session_id IS NOT NULL AND duplicate_of IS NULL"),
    ),
    # Added by migration 0014: the few `other` spans counted as LLM calls, so a batch learns
    # cheaply whether a stored one in its traces may need re-deciding (ingest/llm_calls.py).
    Index(
        "ix_spans_org_llm_wrappers",
        "org_id",
        "trace_id",
        sqlite_where=text("operation = 'other' AND llm_call"),
        postgresql_where=text("operation = 'other' AND llm_call"),
    ),
)

# A repeating export (migration 0022): the same filter, format and fields over each previous
# full day, week or month of the owner's clock; each run is an ordinary export job
# (`exports/schedules.py`). last_job_id is a plain number: a key to export_jobs would make a cycle.
export_schedules = Table(
    "export_schedules",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("org_id", Integer, ForeignKey("orgs.id", ondelete="CASCADE"), nullable=False),
    Column("owner", String(64), nullable=False),
    Column("name", String(100), nullable=False),
    Column("filter_json", Text, nullable=False),  # no time window: each run sets its period
    Column("format", String(8), nullable=False),
    Column("compression", String(8), nullable=False),
    Column("fields", JsonB),  # NULL: the owner's role's default set at each run
    Column("row_limit", Integer, nullable=False),
    Column("cadence", String(8), nullable=False),  # daily | weekly | monthly
    Column("time_zone", String(64), nullable=False),
    Column("next_run_at", UtcDateTime, nullable=False),
    Column("last_job_id", Integer),
    Column("last_error", Text),
    Column("webhook_url", String(500)),
    Column("enabled", Boolean, nullable=False, server_default="1"),
    Column("created_at", UtcDateTime, nullable=False),
    Index("ix_export_schedules_due", "enabled", "next_run_at"),
    Index("ix_export_schedules_org", "org_id", "id"),
)

export_jobs = Table(
    "export_jobs",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("org_id", Integer, ForeignKey("orgs.id", ondelete="CASCADE"), nullable=False),
    Column("created_by", String(64), nullable=False),
    Column("filter_json", Text, nullable=False),
    Column("format", String(8), nullable=False),
    Column("compression", String(8), nullable=False),
    Column("fields", JsonB, nullable=False),
    Column("row_limit", Integer, nullable=False),
    # pending -> processing -> completed | failed | cancelled; completed -> expired
    Column("status", String(12), nullable=False),
    Column("progress", Float, nullable=False, server_default="0"),
    Column("rows_written", Integer, nullable=False, server_default="0"),
    Column("file_size", BigId),
    Column("checksum_sha256", String(64)),
    Column("file_name", String(200)),
    Column("error_message", Text),
    # the data as of creation: spans with a higher id, or newer than the pin, are left out
    Column("snapshot_max_id", BigId, nullable=False),
    Column("snapshot_at", UtcDateTime, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("started_at", UtcDateTime),
    Column("finished_at", UtcDateTime),
    Column("expires_at", UtcDateTime),
    Column("heartbeat_at", UtcDateTime),
    Column("worker_id", String(100)),
    Column("attempts", Integer, nullable=False, server_default="0"),
    # the reader's zone: each time column is followed by its local time with the offset
    Column("time_zone", String(64), nullable=True),
    # a run of a repeating export (migration 0022): one job per schedule and period, by index
    Column(
        "schedule_id",
        Integer,
        ForeignKey("export_schedules.id", ondelete="SET NULL"),
        nullable=True,
    ),
    Column("period_start", UtcDateTime, nullable=True),
    Index("ix_export_jobs_status", "status", "id"),
    Index("ux_export_jobs_schedule_period", "schedule_id", "period_start", unique=True),
    Index("ix_export_jobs_org_created", "org_id", "created_at"),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    # NULL (migration 0010): a failed log-in with a username no org has
    Column("org_id", Integer, ForeignKey("orgs.id", ondelete="CASCADE")),
    Column("username", String(64), nullable=False),
    Column("action", String(32), nullable=False),
    Column("subject", String(100)),
    Column("at", UtcDateTime, nullable=False),
    Column("detail", JsonB, nullable=False),
    # Added by migration 0010: the values before and after a change, and the client address.
    Column("before", JsonB),
    Column("after", JsonB),
    Column("address", String(64)),
    Index("ix_audit_log_at", "at"),
    Index("ix_audit_log_org_at", "org_id", "at"),
)

# Log-in sessions (migration 0010): the login cookie names one by a random id, of which only
# a SHA-256 is kept; logging out or idling past the limit ends it on the server.
user_sessions = Table(
    "user_sessions",
    metadata,
    Column("id_hash", String(64), primary_key=True),
    Column("user_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("last_seen_at", UtcDateTime, nullable=False),
    Column("ended_at", UtcDateTime),
    Column("end_reason", String(16)),  # logout | idle | disabled | password | role
    Column("address", String(64)),
    Index("ix_user_sessions_user", "user_id"),
)

# Failed log-ins and bad API keys per username or client address (migration 0010), kept in
# the database so the limits hold across server processes.
auth_throttle = Table(
    "auth_throttle",
    metadata,
    Column("kind", String(8), primary_key=True),  # user | address | key
    Column("subject", String(200), primary_key=True),
    Column("failures", Integer, nullable=False),
    Column("last_failure_at", UtcDateTime, nullable=False),
    Column("locked_until", UtcDateTime),
)

# Per trace (and project): totals over its spans so far, kept as spans arrive, so the
# explorer can sort whole traces by tree cost without summing every matching tree first.
trace_totals = Table(
    "trace_totals",
    metadata,
    Column("org_id", Integer, ForeignKey("orgs.id", ondelete="CASCADE"), nullable=False),
    Column("trace_id", String(32), nullable=False),
    Column("project_id", Integer, nullable=False),
    Column("root_id", BigId),  # spans.id of the root, once it has arrived (in this project)
    Column("span_count", Integer, nullable=False),
    Column("error_count", Integer, nullable=False),
    Column("total_cost_usd", Float, nullable=False),
    Column("total_tokens", BigId, nullable=False),
    Column("max_span_id", BigId, nullable=False),  # the newest span counted in
    # Added by migration 0008: the earliest and latest span start counted in, and whether the
    # trace also has spans in another project (then its totals need all of its rows).
    Column("first_start", UtcDateTime),
    Column("last_start", UtcDateTime),
    Column("shared", Boolean, nullable=False, server_default="0"),
    Column("last_end", UtcDateTime),  # migration 0011: the latest span end (a trace's extent)
    UniqueConstraint("org_id", "trace_id", "project_id", name="uq_trace_totals_key"),
    Index("ix_trace_totals_org_last", "org_id", "last_start"),
    # the few traces in several projects, found without reading the others
    Index(
        "ix_trace_totals_shared",
        "org_id",
        "last_start",
        sqlite_where=text("shared"),
        postgresql_where=text("shared"),
    ),
    # migration 0024: the tree-total sorts walk these from the top (`traces/tree_ranking.py`)
    Index("ix_trace_totals_org_cost", "org_id", "total_cost_usd"),
    Index("ix_trace_totals_org_tokens", "org_id", "total_tokens"),
)
# migration 0024: a trace's extent (the duration sort), as the stores keep the two times
Index(
    "ix_trace_totals_org_extent",
    trace_totals.c.org_id,
    (trace_totals.c.last_end - trace_totals.c.first_start).self_group(),
)


def is_shared(table) -> ColumnElement[bool]:
    """`shared`, written bare: SQLite uses the partial index `ix_trace_totals_shared` (WHERE
    shared) only for that very term, not for the `shared = 1` or `shared IS 1` SQLAlchemy
    writes (measured at 1M spans: 0.1 ms against 150 ms per count). `table`: trace_totals or
    an alias of it. Untyped on purpose: a column typed Boolean is written `shared = 1` by
    SQLAlchemy 2.1 on SQLite (no native booleans), which reads the whole window again."""
    return literal_column(f"{table.name}.shared")


# Keys that programs (OTLP exporters, later the HTTP API) present. Only a SHA-256 of the key is
# kept: keys are 256-bit random, so a slow hash adds nothing, and the lookup must be one index probe.
api_keys = Table(
    "api_keys",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("org_id", Integer, ForeignKey("orgs.id", ondelete="CASCADE"), nullable=False),
    Column("project_id", Integer, ForeignKey("projects.id", ondelete="CASCADE")),  # None: any
    Column("name", String(100), nullable=False),
    Column("prefix", String(16), nullable=False),  # shown in lists so a key can be recognised
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("scopes", String(64), nullable=False),  # comma-separated: ingest, read
    # what a read key may do, as a user of this role would (README "HTTP API")
    Column("role", String(16), nullable=False, server_default="developer"),
    Column("created_by", String(64), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("last_used_at", UtcDateTime),
    Column("revoked_at", UtcDateTime),
    Index("ix_api_keys_org", "org_id"),
)

# ---- alerts (README "Alerts") ---------------------------------------------------------
alert_rules = Table(
    "alert_rules",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("org_id", Integer, ForeignKey("orgs.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(100), nullable=False),
    # metric rules: a metrics-engine series; system rules: system_kind names the check
    Column("system_kind", String(32)),
    Column("series", String(64), nullable=False),  # e.g. duration_ms.p95
    Column("comparator", String(2), nullable=False),  # > >= < <= (anomaly rules: > < <>)
    Column("threshold", Float, nullable=False),
    Column("window_s", Integer, nullable=False),
    Column("filter_json", Text, nullable=False),
    Column("group_by", String(32)),
    Column("min_requests", Integer, nullable=False),
    Column("pending_s", Integer, nullable=False),
    Column("keep_firing_s", Integer, nullable=False),
    Column("webhook_url", String(500)),
    Column("muted_until", UtcDateTime),
    # "threshold" compares with `threshold`; "anomaly" with the same hour of the week over the
    # last `baseline_weeks` weeks (alerts/anomaly.py): outside `sensitivity` robust deviations
    # in `direction` (above | below | both). Migration 0021.
    Column("kind", String(12), nullable=False, server_default="threshold"),
    Column("baseline_weeks", Integer),
    Column("sensitivity", Float),
    Column("direction", String(8)),
    Column("created_by", String(64), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    UniqueConstraint("org_id", "name", name="uq_alert_rules_org_name"),
)

# One row per rule and group (group '' when the rule has no group-by): where the state machine is.
alert_states = Table(
    "alert_states",
    metadata,
    Column("rule_id", Integer, ForeignKey("alert_rules.id", ondelete="CASCADE"), primary_key=True),
    Column("group_key", String(200), primary_key=True),
    Column("state", String(10), nullable=False),  # ok | pending | firing | resolved
    Column("since", UtcDateTime, nullable=False),
    Column("last_breach_at", UtcDateTime),
    Column("last_value", Float),
    Column("last_requests", Integer),
    Column("evaluated_at", UtcDateTime, nullable=False),
)

alert_events = Table(
    "alert_events",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("org_id", Integer, ForeignKey("orgs.id", ondelete="CASCADE"), nullable=False),
    Column("rule_id", Integer, ForeignKey("alert_rules.id", ondelete="CASCADE"), nullable=False),
    Column("group_key", String(200), nullable=False),
    Column("from_state", String(10), nullable=False),
    Column("to_state", String(10), nullable=False),
    Column("value", Float),
    Column("threshold", Float),  # anomaly rules: the baseline median (NULL: none)
    Column("at", UtcDateTime, nullable=False),
    Index("ix_alert_events_org_at", "org_id", "at"),
    Index("ix_alert_events_rule_at", "rule_id", "at"),
)

webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("org_id", Integer, ForeignKey("orgs.id", ondelete="CASCADE"), nullable=False),
    # an alert's delivery names its rule and event; a repeating export's, its schedule (0022)
    Column("rule_id", Integer, ForeignKey("alert_rules.id", ondelete="CASCADE"), nullable=True),
    Column("event_id", BigId, ForeignKey("alert_events.id", ondelete="CASCADE"), nullable=True),
    Column(
        "schedule_id",
        Integer,
        ForeignKey("export_schedules.id", ondelete="CASCADE"),
        nullable=True,
    ),
    Column("url", String(500), nullable=False),
    Column("body", Text, nullable=False),
    Column("status", String(10), nullable=False),  # pending | delivered | failed
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", UtcDateTime, nullable=False),
    Column("last_status_code", Integer),
    Column("last_error", String(300)),
    Column("created_at", UtcDateTime, nullable=False),
    Column("finished_at", UtcDateTime),
    Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
    Index("ix_webhook_deliveries_rule", "rule_id", "id"),
)

# Liveness of worker processes, for the 'no worker heartbeat' system rule.
worker_heartbeats = Table(
    "worker_heartbeats",
    metadata,
    Column("worker_id", String(100), primary_key=True),
    Column("seen_at", UtcDateTime, nullable=False),
)

# Spans accepted and rejected by the receiver per org and minute, for the ingestion system rule.
ingest_counts = Table(
    "ingest_counts",
    metadata,
    Column("org_id", Integer, ForeignKey("orgs.id", ondelete="CASCADE"), primary_key=True),
    Column("bucket_start", UtcDateTime, primary_key=True),
    Column("accepted", Integer, nullable=False),
    Column("rejected", Integer, nullable=False),
)

# A monthly cost budget per org; the Overview page burns it down and forecasts the month end.
org_budgets = Table(
    "org_budgets",
    metadata,
    Column("org_id", Integer, ForeignKey("orgs.id", ondelete="CASCADE"), primary_key=True),
    Column("monthly_usd", Float, nullable=False),
    Column("updated_by", String(64), nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
)

# ---- dashboards (issue 20 part 1, README "Dashboards") ---------------------------------
# One row per saved dashboard of an org: its definition (name, period and filters, the grid's
# charts) as the JSON that the API and the export hand out (`dashboards/model.py`), checked
# when it is saved and again when it is read.
dashboards = Table(
    "dashboards",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("org_id", Integer, ForeignKey("orgs.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(100), nullable=False),
    Column("definition", Text, nullable=False),
    Column("created_by", String(200), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_by", String(200), nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    UniqueConstraint("org_id", "name", name="uq_dashboards_org_name"),
)


COST_SOURCES = ("reported", "computed", "unpriced")
