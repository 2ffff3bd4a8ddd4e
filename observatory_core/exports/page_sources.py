"""Where a job's pages come from. The rows are read where the explorer reads them
(`storage/span_reads.py`): the ClickHouse span store when `OBSERVATORY_SPAN_STORE` is set,
through the same builders (each span one stored row there, docs/span-store-internals.md "Each
span once") in windows of start time, CSV, JSON lines and JSON text written by the engine where
it can (`exports/span_store_csv.py`, `span_store_json.py`) and Parquet pages made by column
(`span_store_parquet.py`), pinned to the spans written before the job was made
(`Store.pin_of_snapshot`); on PostgreSQL, CSV pages are written by the database (COPY)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator, Iterator

from sqlalchemy.engine import Engine

from observatory_core.accounts.scope import Scope
from observatory_core.base.zones import Zone
from observatory_core.exports.local_times import with_local
from observatory_core.exports.span_store_csv import csv_line_plan
from observatory_core.exports.span_store_json import json_text_plan
from observatory_core.exports.span_store_pages import (
    TextPlan,
    Windows,
    job_windows,
    window_pages,
)
from observatory_core.exports.span_store_parquet import parquet_plan
from observatory_core.exports.worker_config import WorkerConfig
from observatory_core.filters.spec import FilterSpec
from observatory_core.semantic.fields import FIELDS
from observatory_core.storage.copy_out import copy_ahead, copy_csv_rows
from observatory_core.storage.stores import store_for
from observatory_core.storage.transient import describe
from observatory_core.traces.query import iter_span_ids, iter_span_pages

log = logging.getLogger("observatory.exports")


def close_quietly(pages: Generator) -> None:
    """Close a page generator now (its connection goes back to the pool) rather than when the
    collector finds it; a connection that died meanwhile fails its rollback, which is moot."""
    try:
        pages.close()
    except Exception as exc:
        log.debug("closing an export page reader failed: %s", describe(exc))


def pin_of(reads: Engine, job: dict) -> dict:
    """The job's snapshot as the store its rows are read from pins it."""
    max_id = store_for(reads).pin_of_snapshot(job["snapshot_max_id"], job["snapshot_at"])
    return {"as_of": job["snapshot_at"], "max_id": max_id}


def _text_plan(job: dict, fields: tuple[str, ...]) -> TextPlan | None:
    """What the span store's engine writes of the job's file (None: rows for the writers;
    local time columns are written by the row path)."""
    if job_zone(job) is not None:
        return None
    if job["format"] == "csv":
        return csv_line_plan(fields)
    if job["format"] in ("json", "jsonl"):
        return json_text_plan(fields)
    if job["format"] == "parquet":
        return parquet_plan(fields)
    return None


def _read_rows(text_plan: TextPlan | None, config: WorkerConfig) -> int:
    """Rows per read on the span store: CSV's lines come as one column of bytes (no Python
    object per value), so its reads are larger (fewer windows each re-reading the parts'
    edges; docs/span-store-internals.md, "Exports")."""
    lines = text_plan is not None and text_plan.reads_lines
    return config.span_store_line_rows if lines else config.span_store_read_rows


def span_store_windows(
    engine: Engine,
    job: dict,
    scope: Scope,
    spec: FilterSpec,
    config: WorkerConfig,
    fields: tuple[str, ...],
) -> Windows | None:
    """The job's windows on the span store (`span_store_pages.job_windows`), else None."""
    if not store_for(engine).pages_exports_by_window:
        return None
    return job_windows(
        engine,
        scope,
        spec,
        page_size=config.page_size,
        read_rows=_read_rows(_text_plan(job, fields), config),
        row_limit=job["row_limit"],
        **pin_of(engine, job),
    )


def pages_of(
    engine: Engine,
    job: dict,
    scope: Scope,
    spec: FilterSpec,
    fields: tuple[str, ...],
    config: WorkerConfig,
    plan: Windows | None,
) -> Iterator[tuple[int, Callable]]:
    """(row count, write function) per page, read from `engine` (where spans are read:
    `span_reads`); on the span store by the job's windows `plan`. CSV takes the COPY fast path
    where the store has one (`Store.copies_csv`: PostgreSQL): the explorer's filter picks each
    page's ids, and the database writes their CSV lines (stored columns only: an expression
    field is written by the row path)."""
    pinned = pin_of(engine, job)
    zone = job_zone(job)
    # not "metadata:<key>"; local time columns are written by the row path
    copyable = zone is None and all(f in FIELDS and FIELDS[f].plain for f in fields)
    if job["format"] == "csv" and store_for(engine).copies_csv and copyable:
        pages = iter_span_ids(engine, scope, spec, page_size=config.copy_page_size, **pinned)
        copies = copy_ahead(engine, job["org_id"], pages, fields, config.copy_ahead)
        try:
            for ids, lines in copies:
                yield (
                    len(ids),
                    lambda writer, n, lines=lines, ids=ids: writer.write_bytes(
                        lines
                        if n == len(ids)
                        else copy_csv_rows(engine, job["org_id"], ids[:n], fields)
                    ),
                )
        finally:
            close_quietly(copies)
            close_quietly(pages)
        return
    if plan is not None:  # the span store (`Store.pages_exports_by_window`)
        text_plan = _text_plan(job, fields)
        yield from window_pages(
            engine,
            scope,
            spec,
            fields,
            text_plan=text_plan,
            zone=zone,
            pinned=pinned,
            page_size=config.page_size,
            read_rows=_read_rows(text_plan, config),
            row_limit=job["row_limit"],
            plan=plan,
        )
        return
    pages = iter_span_pages(
        engine, scope, spec, fields=fields, page_size=config.page_size, **pinned
    )
    try:
        for page in pages:
            yield (
                len(page),
                lambda writer, n, page=page: writer.write_rows(with_local(page[:n], zone, fields)),
            )
    finally:
        close_quietly(pages)


def job_zone(job: dict) -> Zone | None:
    """The zone of the job's local time columns (None: UTC columns only, as before zones)."""
    name = job.get("time_zone")
    return Zone(name) if name else None
