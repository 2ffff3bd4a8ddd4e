"""`python -m observatory_core import FILE`: OTLP/JSON files and our own exports back in.

OTLP/JSON (one ExportTraceServiceRequest, or one per line as the collector's file exporter
writes) goes through the same mapping as the receiver. Our CSV, JSON Lines, JSON and Parquet
exports come back as the rows they were: an export imported into an empty org gives the same
rows. Bad rows are counted and named by line; good rows are stored in batches, and a row the
database refuses costs only itself.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

from observatory_core.accounts.tenancy import ensure_project
from observatory_core.base.errors import UserError
from observatory_core.ingest.apikeys import KeyInfo
from observatory_core.ingest.isolate import write_isolating
from observatory_core.ingest.otlp import JSON, BadPayload, parse_request, span_label
from observatory_core.ingest.pricing import PriceBook
from observatory_core.ingest.receiver import Receiver
from observatory_core.ingest.spanrows import complete_row
from observatory_core.storage.schema import spans

_HEX32, _HEX16 = re.compile(r"^[0-9a-f]{32}$"), re.compile(r"^[0-9a-f]{16}$")
_SKIPPED = {"id", "org_id", "project_id", "total_tokens", "total_cost_usd"}
_KNOWN = {c.name for c in spans.columns}
MAX_REASONS = 5
BATCH_ROWS = 5000
_TIMES = {"start_time", "end_time"}
_PYTHON_TYPES = {
    c.name: datetime if c.name in _TIMES else c.type.python_type
    for c in spans.columns
    if c.name not in ("tags", "metadata", "attributes")
}


@dataclass
class ImportReport:
    stored: int = 0
    read: int = 0
    rejected: int = 0
    reasons: list[str] = field(default_factory=list)

    def reject(self, reason: str) -> None:
        self.rejected += 1
        if len(self.reasons) < MAX_REASONS:
            self.reasons.append(reason)


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path), encoding="utf-8", newline="")
    return path.open(encoding="utf-8", newline="")


def _kind(path: Path) -> str:
    name = path.name.lower().removesuffix(".gz")
    for ext in ("csv", "jsonl", "json", "parquet"):
        if name.endswith("." + ext):
            return ext
    raise UserError(f"{path.name}: give a .json, .jsonl, .csv or .parquet file (optionally .gz).")


def _parse_value(name: str, raw: Any) -> Any:
    """A field of an exported row as the span column holds it (CSV gives only text)."""
    if raw is None or raw == "":
        return [] if name == "tags" else {} if name in ("metadata", "attributes") else None
    if name in ("tags", "metadata", "attributes"):
        return json.loads(raw) if isinstance(raw, str) else raw
    kind = _PYTHON_TYPES[name]
    if kind is datetime:
        value = raw if isinstance(raw, datetime) else datetime.fromisoformat(raw)
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if kind is bool:
        return raw if isinstance(raw, bool) else raw.lower() in ("true", "1", "t")
    if kind is int:
        return int(raw)
    if kind is float:
        return float(raw)
    return str(raw)


def _row_from_export(raw: dict[str, Any], org_id: int, project_id: int, prices: PriceBook) -> dict:
    row: dict[str, Any] = {"org_id": org_id, "project_id": project_id}
    for name, value in raw.items():
        if name in _KNOWN and name not in _SKIPPED:
            row[name] = _parse_value(name, value)
    for name, pattern in (("trace_id", _HEX32), ("span_id", _HEX16)):
        if not isinstance(row.get(name), str) or not pattern.match(row[name]):
            raise ValueError(f"{name} must be lowercase hex ({pattern.pattern[4:6]} characters)")
    if row.get("parent_span_id") and not _HEX16.match(row["parent_span_id"]):
        raise ValueError("parent_span_id must be 16 lowercase hex characters or empty")
    if not row.get("start_time") or not row.get("end_time"):
        raise ValueError("start_time and end_time are required")
    row.setdefault("name", "(unnamed)")
    row.setdefault("operation", "other")
    row.setdefault("status", "unset")
    if "input_cost_usd" not in row and "output_cost_usd" not in row:
        total = raw.get("total_cost_usd")
        cost = prices.cost(
            org_id,
            row.get("provider"),
            row.get("model"),
            row.get("input_tokens") or 0,
            row.get("output_tokens") or 0,
            row["start_time"],
            reported_usd=float(total) if total not in (None, "") else None,
        )
        row.update(
            input_cost_usd=cost.input_usd, output_cost_usd=cost.output_usd, cost_source=cost.source
        )
    row.setdefault("cost_source", "reported")
    return row


def _export_rows(path: Path, kind: str) -> Iterator[tuple[int, dict[str, Any]]]:
    if kind == "parquet":
        import pyarrow.parquet as pq

        line = 0
        for batch in pq.ParquetFile(path).iter_batches(batch_size=5000):
            for record in batch.to_pylist():
                line += 1
                yield line, record
        return
    with _open_text(path) as handle:
        if kind == "csv":
            yield from enumerate(csv.DictReader(handle), start=2)
        elif kind == "jsonl":
            for number, text in enumerate(handle, start=1):
                if text.strip():
                    yield number, json.loads(text)
        else:
            yield from enumerate(json.load(handle), start=1)


def _looks_like_otlp(path: Path, kind: str) -> bool:
    if kind not in ("json", "jsonl"):
        return False
    with _open_text(path) as handle:
        head = handle.read(4096).lstrip()
    return head.startswith("{") and '"resourceSpans"' in head


def _otlp_requests(path: Path, kind: str) -> Iterator[bytes]:
    with _open_text(path) as handle:
        if kind == "json":
            yield handle.read().encode()
        else:
            for text in handle:
                if text.strip():
                    yield text.encode()


def import_file(
    engine: Engine,
    org_id: int,
    path: Path,
    *,
    project: str = "default",
    text_max_chars: int = 16_000,
    on_batch: Callable[[int, int], None] | None = None,
) -> ImportReport:
    """Store the spans of `path` in `project` of the org; re-importing adds nothing."""
    if not path.is_file():
        raise UserError(f"No file {path}; give the path of an OTLP/JSON file or an export.")
    kind = _kind(path)
    with engine.begin() as conn:
        project_id = ensure_project(conn, org_id, project, project)
        prices = PriceBook.load(conn)
    report = ImportReport()
    if _looks_like_otlp(path, kind):
        receiver = Receiver(engine, text_max_chars=text_max_chars)
        key = KeyInfo(id=0, org_id=org_id, project_id=project_id, scopes=frozenset({"ingest"}))
        for number, body in enumerate(_otlp_requests(path, kind), start=1):
            try:
                decoded = receiver.map_request(
                    parse_request(body, JSON), key, JSON, datetime.now(UTC)
                )
            except BadPayload as exc:
                raise UserError(f"{path.name}, request {number}: {exc}") from None
            report.read += len(decoded.rows) + decoded.rejected
            report.rejected += decoded.rejected
            report.reasons.extend(decoded.reasons[: MAX_REASONS - len(report.reasons)])
            _store(engine, decoded.rows, report, on_batch)
        return report

    def rows() -> Iterator[dict[str, Any]]:
        try:
            for number, raw in _export_rows(path, kind):
                report.read += 1
                try:
                    yield complete_row(
                        _row_from_export(raw, org_id, project_id, prices), text_max_chars
                    )
                except (ValueError, TypeError, AttributeError) as exc:
                    report.reject(f"line {number}: {exc}")
        except (ValueError, csv.Error, UnicodeDecodeError, OSError) as exc:
            raise UserError(
                f"{path.name} cannot be read as {kind} ({exc}); is it cut short?"
            ) from None

    _store(engine, rows(), report, on_batch)
    return report


def _store(
    engine: Engine,
    rows: Iterable[dict[str, Any]],
    report: ImportReport,
    on_batch: Callable[[int, int], None] | None,
) -> None:
    """Write in batches; a row the database refuses is counted and named, not the batch."""
    it = iter(rows)
    while batch := list(islice(it, BATCH_ROWS)):
        outcome = write_isolating(engine, batch)
        report.stored += outcome.written
        for index, why in outcome.refused.items():
            row = batch[index]
            report.reject(
                f"{span_label(row.get('name'), row.get('span_id'))}: the database refused it: {why}"
            )
        if on_batch:
            on_batch(len(batch), outcome.written)
