"""Writing a batch of which the database may refuse a few rows: only those rows are lost.

A batch is written in one transaction; when the database refuses it for a reason other than
being unavailable (a value it cannot hold, a broken constraint), the batch is split in halves
and each half written on its own, down to the single rows it refuses. Re-sent spans are
skipped by the writes, so trying a part again never duplicates it. Past `MAX_REFUSED` refused
rows the failure is taken to be the database's, not the rows', and the rest is not tried. The
same holds on the ClickHouse span store (`ingest/to_clickhouse.py`), whose failures worth a
retry come as `DatabaseUnavailable`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Engine

from observatory_core.base.errors import ConfigError
from observatory_core.ingest.persist import write_spans
from observatory_core.storage.engine import is_unavailable

log = logging.getLogger("observatory.ingest")
MAX_REFUSED = 16

Write = Callable[..., int]


@dataclass
class Outcome:
    """How many rows were new, and which rows (by index) the database refused and why."""

    written: int = 0
    refused: dict[int, str] = field(default_factory=dict)


def database_reason(exc: BaseException) -> str:
    """The driver's own first line (e.g. 'null value in column ...'), without SQL."""
    return str(getattr(exc, "orig", None) or exc).splitlines()[0][:300] or type(exc).__name__


def write_isolating(
    engine: Engine, rows: list[dict[str, Any]], write: Write = write_spans
) -> Outcome:
    """Write `rows` (complete span rows); raises only when the database is unavailable."""
    outcome = Outcome()
    _write_part(engine, rows, 0, len(rows), outcome, write)
    return outcome


def _write_part(
    engine: Engine, rows: list[dict[str, Any]], lo: int, hi: int, outcome: Outcome, write: Write
) -> None:
    if lo >= hi:
        return
    if len(outcome.refused) >= MAX_REFUSED:
        first = next(iter(outcome.refused.values()))
        for i in range(lo, hi):
            outcome.refused[i] = f"not written: the database refused its batch ({first})"
        return
    try:
        outcome.written += write(engine, rows[lo:hi], batch_size=hi - lo)
    except Exception as exc:
        if is_unavailable(exc) or isinstance(exc, ConfigError):
            raise  # not the rows' fault: splitting would refuse them all
        if hi - lo == 1:
            log.warning("the database refused span %s: %s", rows[lo].get("span_id"), exc)
            outcome.refused[lo] = database_reason(exc)
            return
        mid = (lo + hi) // 2
        _write_part(engine, rows, lo, mid, outcome, write)
        _write_part(engine, rows, mid, hi, outcome, write)
