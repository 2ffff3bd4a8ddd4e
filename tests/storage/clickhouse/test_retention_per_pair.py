"""One batch of several orgs and projects, each with its own retention: every row is stamped,
and dropped as expired, by its own (org, project), which the write works out once per pair of
the batch (`writes.retained`); checked against polars on the raw rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl

from observatory_core.storage.clickhouse.writes import write_spans
from tests.storage.clickhouse.conftest import demo_rows

NOW = datetime.now(UTC)
# (org, project) or (org, 0) for the org -> days; org 3's 30,000 days is past the hook's
# largest (`layout.MAX_TTL_DAYS`): stamped 0, kept
DAYS = {(1, 0): 2, (1, 100): 30, (2, 201): 3, (3, 0): 30_000}
STAMP = {2: 2, 30: 30, 3: 3, 30_000: 0, 0: 0}
EDGES = (timedelta(days=2), timedelta(days=3))


def _rows() -> list[dict]:
    """Demo rows of every org, started 1 hour to 5 days ago, none within 10 minutes of a
    retention's end (the check runs seconds after the write)."""
    rows = demo_rows(800, seed=21, days=4)
    shift = NOW - timedelta(hours=1) - max(r["start_time"] for r in rows)
    moved = [
        dict(r, start_time=r["start_time"] + shift, end_time=r["end_time"] + shift) for r in rows
    ]
    return [
        r
        for r in moved
        if all(abs(NOW - r["start_time"] - edge) > timedelta(minutes=10) for edge in EDGES)
    ]


def _days(org_id: int, project_id: int) -> int:
    return DAYS.get((org_id, project_id), DAYS.get((org_id, 0), 0))


def test_each_row_is_stamped_and_expired_by_its_own_org_and_project(chdb_store):
    rows = _rows()
    raw = pl.DataFrame(
        [
            {
                "org_id": r["org_id"],
                "project_id": r["project_id"],
                "span_id": r["span_id"],
                "age_days": (NOW - r["start_time"]).total_seconds() / 86400,
                "days": _days(r["org_id"], r["project_id"]),
            }
            for r in rows
        ]
    )
    expected = (
        raw.filter((pl.col("days") == 0) | (pl.col("age_days") < pl.col("days")))
        .with_columns(pl.col("days").replace_strict(STAMP).alias("retain_days"))
        .select("org_id", "project_id", "span_id", "retain_days")
        .sort("org_id", "project_id", "span_id")
    )
    # the batch mixes pairs of different stamps, and one org's pairs both keep and drop rows
    assert expected["retain_days"].n_unique() >= 3
    assert raw.filter(pl.col("org_id") == 1)["project_id"].n_unique() >= 2
    assert 0 < len(expected.filter(pl.col("org_id") == 1)) < len(raw.filter(pl.col("org_id") == 1))

    written = write_spans(chdb_store, rows, retain_days=DAYS)

    stored = pl.DataFrame(
        chdb_store.client.query(
            f"SELECT org_id, project_id, span_id, retain_days FROM {chdb_store.table('spans')}"
        ).result_rows,
        schema=["org_id", "project_id", "span_id", "retain_days"],
        orient="row",
    ).sort("org_id", "project_id", "span_id")
    assert written == len(expected)
    assert stored.cast(expected.schema).to_dicts() == expected.to_dicts()
