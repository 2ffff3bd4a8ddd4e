"""`python -m observatory_core migrate-spans --to URL`: the spans of `DATABASE_URL` (SQLite or
PostgreSQL) copied into the ClickHouse span store, resumable, with progress (docs/scale.md,
"Moving spans in").

Each org is read in keyset pages ordered by (start time, trace id, span id): the index
`ix_spans_org_start_trace` (org, start time, trace id) serves the order and the bound, so a
page costs the same at the start and at the end of a billion spans. Each page goes through the
store's own write (`writes.write_spans`: a span already there is not written again, so the
rollups and trace totals its views fill count it once), then the page's last key is recorded in
the target's `migrate_checkpoints` (per source database and org). A run that stopped goes on
after the last key recorded; a page written but not recorded is read again and found stored.
A span set aside as a twin (`duplicate_of`) is copied as it is: the views leave it out there
as the other stores' figures do. Each span is stamped with its retention days as ingest stamps
it (the project's span retention, else the org's, else 0: the table's TTL hook), read from the
source's settings at the start; a span already past it is not copied (the engine would count
it in the rollups and drop it at once) and is counted as expired.

`check` compares what each org has on both sides (spans, tokens, cost) for `--check`, of the
spans still within their retention on both.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Text, and_, bindparam, cast, func, not_, or_, select, true, tuple_
from sqlalchemy.engine import Connection, Engine

from observatory_core.base.errors import UserError
from observatory_core.storage.clickhouse.connect import SpanStore
from observatory_core.storage.clickhouse.org_turns import org_turns
from observatory_core.storage.clickhouse.restamp import Stamp, retain_days, stamps_of
from observatory_core.storage.clickhouse.writes import (
    EXPIRY_MARGIN,
    JsonText,
    retainer,
    unexpired,
    write_spans,
)
from observatory_core.storage.retention import policies
from observatory_core.storage.schema import orgs, spans

# spans per page read and written: one insert each (ClickHouse wants few large ones), and
# what the process holds at once (peak RSS at 1M spans: docs/benchmarks.md)
BATCH = 20_000
_TABLE = "migrate_checkpoints"
# the JSON objects read as their text, handed to the write as it is (`writes.JsonText`), not
# decoded and encoded again (measured: docs/scale.md, "Moving spans in")
_JSON_TEXT = ("metadata", "attributes")
_COLUMNS = [
    cast(c, Text).label(c.name) if c.name in _JSON_TEXT else c
    for c in spans.columns
    if c.name != "id"
]
_KEY = (spans.c.start_time, spans.c.trace_id, spans.c.span_id)


@dataclass(frozen=True)
class Checkpoint:
    """The key of the last span copied for one org, and what the runs so far did."""

    start_time: datetime
    trace_id: str
    span_id: str
    copied: int = 0
    skipped: int = 0


@dataclass(frozen=True)
class MigrateReport:
    copied: int  # written by this run
    skipped: int  # read by this run and found in the target already
    seconds: float
    expired: int = 0  # read by this run and past their retention: not copied

    @property
    def rate(self) -> float:
        read = self.copied + self.skipped + self.expired
        return read / self.seconds if self.seconds else 0.0


def source_name(engine: Engine) -> str:
    """The source database as the checkpoints name it: its URL without the password (another
    spelling of the same database starts from the beginning, and finds every span stored)."""
    return engine.url.render_as_string(hide_password=True)


def _micros(value: datetime) -> datetime:
    return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)


def checkpoints(store: SpanStore, source: str) -> dict[int, Checkpoint]:
    """The last key recorded per org for `source` (the newest record of each)."""
    result = store.client.query(
        "SELECT org_id, argMax(start_time, updated_at), argMax(trace_id, updated_at), "
        "argMax(span_id, updated_at), argMax(copied, updated_at), argMax(skipped, updated_at) "
        f"FROM {store.table(_TABLE)} WHERE source = %(source)s GROUP BY org_id",
        parameters={"source": source},
    )
    return {
        int(org): Checkpoint(_micros(start), trace, span, int(copied), int(skipped))
        for org, start, trace, span, copied, skipped in result.result_rows
    }


def _record(store: SpanStore, source: str, org_id: int, point: Checkpoint) -> None:
    store.client.insert(
        store.table(_TABLE),
        [
            [
                source,
                org_id,
                point.start_time,
                point.trace_id,
                point.span_id,
                point.copied,
                point.skipped,
                datetime.now(UTC),
            ]
        ],
        column_names=[
            "source",
            "org_id",
            "start_time",
            "trace_id",
            "span_id",
            "copied",
            "skipped",
            "updated_at",
        ],
    )


def _after(org_id: int, point: Checkpoint | None) -> list:
    where = [spans.c.org_id == org_id]
    if point is not None:
        # the plain bound narrows the index range; the tuple breaks ties within it
        where.append(spans.c.start_time >= point.start_time)
        bound = (point.start_time, point.trace_id, point.span_id)
        where.append(
            tuple_(*_KEY)
            > tuple_(*(bindparam(None, v, type_=c.type) for c, v in zip(_KEY, bound, strict=True)))
        )
    return where


def _page(conn: Connection, org_id: int, point: Checkpoint | None, size: int) -> list[dict]:
    query = select(*_COLUMNS).where(*_after(org_id, point)).order_by(*_KEY).limit(size)
    rows = [dict(row) for row in conn.execute(query).mappings()]
    for row in rows:
        for name in _JSON_TEXT:
            row[name] = JsonText(row[name])
    return rows


def source_stamps(engine: Engine) -> dict[int, Stamp]:
    """Every org's span retention in the source, as the store stamps it."""
    with engine.connect() as conn:
        return stamps_of(policies(conn).values())


def source_orgs(engine: Engine, org_id: int | None = None) -> dict[int, str]:
    """Org id -> slug, of every org (or the one asked for) in the source."""
    query = select(orgs.c.id, orgs.c.slug).order_by(orgs.c.id)
    if org_id is not None:
        query = query.where(orgs.c.id == org_id)
    with engine.connect() as conn:
        return {int(i): slug for i, slug in conn.execute(query).all()}


def has_spans(engine: Engine, org_ids: list[int]) -> bool:
    """Whether the source holds any span of these orgs (an empty source is told, not copied)."""
    with engine.connect() as conn:
        for org_id in org_ids:
            if conn.execute(
                select(spans.c.span_id).where(spans.c.org_id == org_id).limit(1)
            ).first():
                return True
    return False


def remaining(
    engine: Engine, store: SpanStore, org_ids: list[int], *, from_start: bool = False
) -> int:
    """How many spans of the orgs lie past their checkpoints (the progress bar's total)."""
    points = {} if from_start else checkpoints(store, source_name(engine))
    total = 0
    with engine.connect() as conn:
        for org_id in org_ids:
            query = (
                select(func.count()).select_from(spans).where(*_after(org_id, points.get(org_id)))
            )
            total += int(conn.execute(query).scalar_one())
    return total


def _pages(
    engine: Engine, org_id: int, point: Checkpoint | None, size: int
) -> Iterator[list[dict]]:
    while True:
        with engine.connect() as conn:  # one short read per page: no transaction held open
            rows = _page(conn, org_id, point, size)
        if not rows:
            return
        yield rows
        if len(rows) < size:  # the last page: no empty one to read after it
            return
        last = rows[-1]
        point = Checkpoint(last["start_time"], last["trace_id"], last["span_id"])


def migrate_spans(
    engine: Engine,
    store: SpanStore,
    *,
    org_ids: list[int],
    batch: int = BATCH,
    from_start: bool = False,
    on_batch: Callable[[int, int], None] | None = None,
) -> MigrateReport:
    """Copy the spans of `org_ids` past their checkpoints into `store`, recording each page's
    last key after its write. `from_start` reads every span again (spans that reached the
    source after a run, with start times before its checkpoint, are found; the rest is
    skipped as stored). `on_batch(read, written)` after each page, for progress bars."""
    if isinstance(batch, bool) or not isinstance(batch, int) or not 1 <= batch <= 500_000:
        raise UserError(f"--batch must be a whole number from 1 to 500,000, got {batch!r}.")
    source = source_name(engine)
    started = time.perf_counter()
    points = checkpoints(store, source)
    days = retain_days(source_stamps(engine).values())
    retain = retainer(days)
    turns = org_turns(engine)  # the source is the app's DATABASE_URL: a server may be writing
    copied = skipped = expired = 0
    for org_id in org_ids:
        point = points.get(org_id)
        done, passed = (point.copied, point.skipped) if point else (0, 0)
        if from_start:
            point = None
        for rows in _pages(engine, org_id, point, batch):
            kept = unexpired(rows, retain)
            expired += len(rows) - len(kept)
            written = write_spans(
                store,
                kept,
                batch_size=len(rows),
                retain_days=days,
                turn=turns,  # its turn takes in an ingest batch's move left pending first
            )
            done += written
            passed += len(kept) - written
            last = rows[-1]
            _record(
                store,
                source,
                org_id,
                Checkpoint(last["start_time"], last["trace_id"], last["span_id"], done, passed),
            )
            copied += written
            skipped += len(kept) - written
            if on_batch:
                on_batch(len(rows), written)
    return MigrateReport(copied, skipped, time.perf_counter() - started, expired)


# -- --check ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Totals:
    spans: int
    tokens: int
    cost: float


@dataclass(frozen=True)
class OrgCheck:
    org_id: int
    slug: str
    source: Totals
    target: Totals

    @property
    def ok(self) -> bool:
        s, t = self.source, self.target
        return (
            s.spans == t.spans
            and s.tokens == t.tokens
            and math.isclose(s.cost, t.cost, rel_tol=1e-9, abs_tol=1e-6)  # summed in another order
        )


def _within(stamp: Stamp, cutoff: datetime):
    """The source's spans of the org a write would still store at `cutoff`: each project's
    own days, else the org's (0: every span)."""
    own = {p: d for p, d in stamp.project_days.items() if d}
    gone = [
        and_(spans.c.project_id == p, spans.c.start_time <= cutoff - timedelta(days=d))
        for p, d in own.items()
    ]
    if stamp.span_days:
        rest = spans.c.project_id.not_in(list(stamp.project_days)) if stamp.project_days else true()
        gone.append(and_(rest, spans.c.start_time <= cutoff - timedelta(days=stamp.span_days)))
    return not_(or_(*gone)) if gone else true()


def _source_totals(engine: Engine, stamp: Stamp, cutoff: datetime) -> Totals:
    query = select(
        func.count(),
        func.coalesce(func.sum(spans.c.total_tokens), 0),
        func.coalesce(func.sum(spans.c.total_cost_usd), 0.0),
    ).where(spans.c.org_id == stamp.org_id, _within(stamp, cutoff))
    with engine.connect() as conn:
        count, tokens, cost = conn.execute(query).one()
    return Totals(int(count), int(tokens), float(cost))


def _target_totals(store: SpanStore, org_id: int, cutoff: datetime) -> Totals:
    """Each span once however often it was written (`reads.py`'s `LIMIT 1 BY`), of those its
    stamp keeps at `cutoff` (the TTL deletes the others when the engine next merges)."""
    ((count, tokens, cost),) = store.client.query(
        "SELECT count(), sum(toInt64(total_tokens)), sum(total_cost_usd) FROM ("
        f"SELECT total_tokens, total_cost_usd FROM {store.table('spans')} "
        "WHERE org_id = %(org)s AND (retain_days = 0 OR "
        "start_time + toIntervalDay(retain_days) > toDateTime64(%(cutoff)s, 6, 'UTC')) "
        "LIMIT 1 BY trace_id, span_id)",
        parameters={"org": org_id, "cutoff": cutoff.strftime("%Y-%m-%d %H:%M:%S.%f")},
    ).result_rows
    return Totals(int(count), int(tokens or 0), float(cost or 0.0))


def check(engine: Engine, store: SpanStore, org_ids: dict[int, str]) -> list[OrgCheck]:
    """Spans, tokens and cost of each org in the source and in the target, side by side, of
    the spans within their retention (as the copy counts them: `EXPIRY_MARGIN` from now)."""
    cutoff = datetime.now(UTC) + EXPIRY_MARGIN
    stamps = source_stamps(engine)
    return [
        OrgCheck(
            org_id,
            slug,
            _source_totals(engine, stamps.get(org_id, Stamp(org_id)), cutoff),
            _target_totals(store, org_id, cutoff),
        )
        for org_id, slug in org_ids.items()
    ]


def check_lines(checks: list[OrgCheck]) -> list[str]:
    """The comparison as a table a person reads: one line per org, then the verdict."""
    head = f"{'org':<16} {'spans source':>14} {'target':>14} {'tokens source':>16} {'target':>16} {'cost source':>14} {'target':>14}"
    lines = [head]
    for c in checks:
        s, t = c.source, c.target
        lines.append(
            f"{c.slug[:16]:<16} {s.spans:>14,} {t.spans:>14,} {s.tokens:>16,} {t.tokens:>16,} "
            f"{s.cost:>14,.4f} {t.cost:>14,.4f}  {'ok' if c.ok else 'MISMATCH'}"
        )
    return lines
