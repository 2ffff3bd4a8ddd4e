"""Local time columns of an export: each time column followed by the same instant on the
reader's clock with its offset ("2026-03-08T00:00:00-05:00"), so a spreadsheet and a person
both read it right (docs/metrics.md, "Time zones"). Written by the row path: the database's
own CSV (COPY) knows only the stored columns."""

from __future__ import annotations

from datetime import datetime

from observatory_core.base.zones import Zone

TIME_FIELDS = ("start_time", "end_time")
SUFFIX = "_local"


def output_fields(fields: tuple[str, ...], zone: Zone | None) -> tuple[str, ...]:
    """The file's columns: `fields`, each time field followed by its local column."""
    if zone is None:
        return fields
    out: list[str] = []
    for f in fields:
        out.append(f)
        if f in TIME_FIELDS:
            out.append(f + SUFFIX)
    return tuple(out)


def with_local(rows: list[dict], zone: Zone | None, fields: tuple[str, ...]) -> list[dict]:
    """The rows with their local time values (none when the job has no zone)."""
    if zone is None:
        return rows
    times = [f for f in fields if f in TIME_FIELDS]
    for row in rows:
        for f in times:
            value = row.get(f)
            row[f + SUFFIX] = zone.iso(value) if isinstance(value, datetime) else None
    return rows


def is_local(field: str) -> bool:
    return field.endswith(SUFFIX) and field[: -len(SUFFIX)] in TIME_FIELDS
