"""The models of export jobs and repeating exports (`exports.py`); the formats are the
writers' own (`exports/writers.py`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from observatory_core.api.schemas import Meta
from observatory_core.exports.writers import FORMATS


class ExportIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    filters: dict[str, Any] = Field(default_factory=dict, description="A FilterSpec as JSON.")
    format: Literal[tuple(FORMATS)] = "csv"  # type: ignore[valid-type]
    compression: Literal["gzip", "zstd", "snappy", "none"] = Field(
        "gzip",
        description="gzip or none for CSV/JSON/JSONL; zstd, snappy, gzip or none for Parquet",
    )
    fields: list[str] | None = Field(
        None, description="Span fields; default: the export's default set"
    )
    row_limit: int = Field(1_000_000, ge=1, le=1_000_000)
    tz: str | None = Field(
        None,
        max_length=64,
        description="An IANA time zone: each time column is followed by `<name>_local`, the "
        "same instant in that zone with its offset. Default: UTC columns only.",
    )


class ExportJob(BaseModel):
    id: int
    status: str
    format: str
    compression: str
    fields: list[str]
    row_limit: int
    progress: float
    rows_written: int
    file_size: int | None
    checksum_sha256: str | None
    error_message: str | None
    attempts: int = Field(0, description="Runs so far: over 1 after a takeover or a retry")
    schedule_id: int | None = Field(
        None, description="The repeating export this job is a run of (/export/schedules)"
    )
    created_by: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    expires_at: datetime | None
    filters: dict[str, Any]
    download_refused: str | None = Field(
        None,
        description="Why the key's role may not download this file (a column or filter on a "
        "field it may not see); null when it may.",
    )


class ExportBody(BaseModel):
    data: ExportJob
    meta: Meta


class ExportList(BaseModel):
    data: list[ExportJob]
    meta: Meta


class ScheduleIn(ExportIn):
    """An export's body plus when it repeats; each run checks it with the key's role then."""

    cadence: Literal["daily", "weekly", "monthly"] = Field(
        description="Each run exports the previous full day, week (from Monday) or month of tz"
    )
    tz: str = Field(  # type: ignore[assignment]
        "UTC",
        max_length=64,
        description="The IANA time zone whose midnights bound the periods; also the zone of "
        "the files' local time columns. The filters' time window is ignored.",
    )
    name: str = Field("", max_length=100, description="Default: the cadence and format")
    webhook_url: str | None = Field(
        None,
        max_length=500,
        description="POSTed a JSON body (Slack-compatible text, and `export` with the job id "
        "and its download_url) when each run's file is ready",
    )


class SchedulePatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: bool = Field(description="false pauses; true resumes from the next period's end")


class Schedule(BaseModel):
    id: int
    name: str
    owner: str
    cadence: str
    time_zone: str
    format: str
    compression: str
    fields: list[str] | None
    row_limit: int
    filters: dict[str, Any]
    enabled: bool
    next_run_at: datetime = Field(description="When the next run starts (UTC)")
    last_job_id: int | None
    last_error: str | None
    has_webhook: bool
    webhook_url: str | None = Field(
        None, description="Shown to those who may change the schedule (its owner, admins)"
    )
    may_manage: bool
    created_at: datetime


class ScheduleBody(BaseModel):
    data: Schedule
    meta: Meta


class ScheduleList(BaseModel):
    data: list[Schedule]
    meta: Meta
