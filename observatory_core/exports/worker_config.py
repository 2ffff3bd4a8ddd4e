"""What one export worker is set to: where files go, its heartbeat's timeout, its page sizes,
how long files and audit entries are kept, and the id its claims carry."""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from observatory_core.exports.jobs import RETENTION

AUDIT_KEEP = timedelta(days=365)  # OBSERVATORY_AUDIT_RETENTION_DAYS


@dataclass(frozen=True)
class WorkerConfig:
    export_dir: Path
    heartbeat_timeout: timedelta = timedelta(seconds=30)
    page_size: int = 5000
    copy_page_size: int = 20_000  # ids per COPY page (PostgreSQL CSV)
    copy_ahead: int = 2  # COPY pages the database prepares while the previous one is written
    span_store_read_rows: int = 20_000  # spans per read on the span store (span_store_pages)
    span_store_line_rows: int = 100_000  # CSV lines per read there (span_store_csv)
    retention: timedelta = RETENTION
    audit_retention: timedelta = AUDIT_KEEP
    worker_id: str = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
