"""Declared dimensions (issue 19): up to ten tag or metadata keys per org, or span fields
rollups do not carry by themselves (user_id, name: too many values to carry for every org),
that spans and rollups carry in slot columns (`DIMENSION_SLOTS`), so a breakdown by one is as
fast as by model; every other key is read from the JSON on the raw path.

- Declaring a key gives it a free slot and queues a back-fill of the last `BACKFILL_DAYS`;
  new spans get the slot's value at ingest, in the batch's transaction (`extract_new`).
- The worker back-fills in chunks of a day or less (`CHUNKS`, `backfill_step`), oldest
  first: each chunk writes the slot on the org's spans and refolds that period's rollups
  (`rollups/refold.py`, `refold_period`), taking the same lock as the writers, so a batch
  that read the declarations before it was made is folded before the chunk runs.
- Removing a key clears its slot the same way, then frees it.
- The metrics engine reads a slot in place of the key (`slot_groups`) once its back-fill is
  done and the range starts at or after `covered_from`; before that the JSON path answers.

See docs/architecture.md, "Declared dimensions".
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, func, insert, literal, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from observatory_core.accounts.audit import record_for
from observatory_core.accounts.permissions import Permission
from observatory_core.accounts.scope import Scope
from observatory_core.base.errors import UserError
from observatory_core.rollups.refold import refold_period
from observatory_core.semantic.field_lookups import by_group, groupable, keyed_problem
from observatory_core.semantic.fields import DIMENSION_SLOTS, SLOT_CHARS, SLOT_MARK
from observatory_core.storage.dialect import serialize_rollup_writes
from observatory_core.storage.schema import org_dimensions, spans

BACKFILL_DAYS = 30  # how far back a newly declared key is extracted from stored spans
# One back-fill transaction (its spans and their rollups, under the writers' lock): a day, or
# the largest of these that holds at most CHUNK_SPANS spans, so ingest waits seconds at most.
# Most of a chunk's time is its fixed work (the rollup rows it replaces), hence days.
CHUNKS = (timedelta(days=1), timedelta(hours=6), timedelta(hours=1))
CHUNK_SPANS = 25_000
BACKFILLING, READY, REMOVING = "backfilling", "ready", "removing"


def _day(t: datetime) -> datetime:
    return t.replace(hour=0, minute=0, second=0, microsecond=0)


def _value(key: str):
    """The key's value over `spans` as a slot holds it: marked, cut to `SLOT_CHARS`; '' for a
    span without one (NULL stays 'not extracted')."""
    text = func.substr(by_group(key).expression(spans.c), 1, SLOT_CHARS)
    return func.coalesce(literal(SLOT_MARK) + text, literal(""))


def declarable(name: str) -> bool:
    """A group-by an org may declare: a tag or metadata key, or a field rollups leave out."""
    field = groupable().get(name)
    return not field.rollup if field is not None else keyed_problem(name) is None


def declarable_fields() -> tuple[str, ...]:
    return tuple(g for g, f in groupable().items() if not f.rollup)


def list_dimensions(engine: Engine, scope: Scope) -> list[dict]:
    """The org's declared keys with their slot and back-fill progress (0..1)."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(org_dimensions)
            .where(org_dimensions.c.org_id == scope.org_id)
            .order_by(org_dimensions.c.created_at)
        ).mappings()
        out = []
        for r in rows:
            whole = (r["backfill_to"] - r["covered_from"]).total_seconds()
            done = (r["done_until"] - r["covered_from"]).total_seconds()
            out.append({**r, "progress": 1.0 if whole <= 0 else min(1.0, done / whole)})
        return out


def declare(engine: Engine, scope: Scope, key: str, *, now: datetime | None = None) -> dict:
    """Give `key` ("tag:customer", "metadata:customer", "user_id") a slot and queue its
    back-fill."""
    scope.require(Permission.ADMIN)
    now = now or datetime.now(UTC)
    if not declarable(key):
        fields = " or ".join(declarable_fields())
        if key in groupable() or ":" not in key:
            raise UserError(
                f"Declare a tag or metadata key (tag:<key> or metadata:<key>) or {fields}, "
                f"not {key!r}: fields like model are always fast."
            )
        raise UserError(keyed_problem(key))
    with engine.begin() as conn:
        taken = {
            r.slot: r.key
            for r in conn.execute(
                select(org_dimensions.c.slot, org_dimensions.c.key).where(
                    org_dimensions.c.org_id == scope.org_id
                )
            )
        }
        if key in taken.values():
            raise UserError(f"{key} is already a dimension.")
        free = [s for s in DIMENSION_SLOTS if s not in taken]
        if not free:
            raise UserError(
                f"An org may declare at most {len(DIMENSION_SLOTS)} dimensions; remove one first."
            )
        start = _day(now - timedelta(days=BACKFILL_DAYS))
        row = {
            "org_id": scope.org_id,
            "slot": free[0],
            "key": key,
            "status": BACKFILLING,
            "covered_from": start,
            "done_until": start,
            "backfill_to": now,
            "rows_done": 0,
            "created_at": now,
            "created_by": scope.username,
        }
        try:
            conn.execute(insert(org_dimensions).values(**row))
        except IntegrityError:
            raise UserError(f"{key} was declared meanwhile; reload the page.") from None
        record_for(conn, scope, "dimension.declare", key, after={"slot": free[0]})
    return row


def remove(engine: Engine, scope: Scope, key: str, *, now: datetime | None = None) -> None:
    """Stop carrying `key`: its slot is cleared in the background, then freed."""
    scope.require(Permission.ADMIN)
    now = now or datetime.now(UTC)
    d = org_dimensions.c
    with engine.begin() as conn:
        found = conn.execute(
            update(org_dimensions)
            .where(d.org_id == scope.org_id, d.key == key, d.status != REMOVING)
            .values(status=REMOVING, done_until=d.covered_from, backfill_to=now, rows_done=0)
        ).rowcount
        if not found:
            raise UserError(f"{key} is not a dimension of this org.")
        record_for(conn, scope, "dimension.remove", key)


def slot_groups(engine: Engine, org_id: int, start: datetime) -> dict[str, str]:
    """key -> slot for the keys whose slot the metrics engine may read over a range starting
    at `start`: back-filled, and covering it."""
    d = org_dimensions.c
    with engine.connect() as conn:
        rows = conn.execute(
            select(d.key, d.slot).where(
                d.org_id == org_id, d.status == READY, d.covered_from <= start
            )
        )
        return {r.key: r.slot for r in rows}


def extract_new(conn: Connection, new) -> None:
    """Fill the declared slots of a batch's new spans (in `spans` and in `new`, which the fold
    reads), in the writer's transaction after `serialize_rollup_writes`."""
    d = org_dimensions.c
    declared = conn.execute(
        select(d.org_id, d.slot, d.key).where(
            d.status != REMOVING, d.org_id.in_(select(new.c.org_id).distinct())
        )
    ).all()
    for org_id, slot, key in declared:
        ids = select(new.c.id).where(new.c.org_id == org_id)
        conn.execute(update(spans).where(spans.c.id.in_(ids)).values({slot: _value(key)}))
        stored = select(spans.c[slot]).where(spans.c.id == new.c.id).scalar_subquery()
        conn.execute(update(new).where(new.c.org_id == org_id).values({slot: stored}))


def _chunk_end(conn: Connection, org_id: int, start: datetime, last: datetime) -> datetime:
    """Where the chunk starting at `start` ends: the first of `CHUNKS` (cut at its own
    boundary) holding at most `CHUNK_SPANS` of the org's spans, else an hour."""
    for size in CHUNKS:
        end = min(start + size - (start - _day(start)) % size, last)
        held = conn.execute(
            select(func.count()).select_from(
                select(literal(1))
                .where(spans.c.org_id == org_id, spans.c.start_time >= start)
                .where(spans.c.start_time < end)
                .limit(CHUNK_SPANS + 1)
                .subquery()
            )
        ).scalar_one()
        if held <= CHUNK_SPANS:
            return end
    return end


def backfill_step(engine: Engine, *, now: datetime | None = None) -> dict | None:
    """One chunk of the oldest pending back-fill (or removal); None when nothing is pending.
    Returns the declaration as it stands after the chunk."""
    d = org_dimensions.c
    with engine.begin() as conn:
        serialize_rollup_writes(conn)  # after any batch that read the old declarations
        row = (
            conn.execute(
                select(org_dimensions)
                .where(d.status.in_((BACKFILLING, REMOVING)))
                .order_by(d.created_at)
                .limit(1)
            )
            .mappings()
            .first()
        )
        if row is None:
            return None
        start = row["done_until"]
        end = _chunk_end(conn, row["org_id"], start, row["backfill_to"])
        removing = row["status"] == REMOVING
        where = [spans.c.org_id == row["org_id"], spans.c.start_time >= start]
        if not removing or end < row["backfill_to"]:
            where.append(spans.c.start_time < end)  # a removal's last chunk: every later span
        value = None if removing else _value(row["key"])
        changed = conn.execute(update(spans).where(*where).values({row["slot"]: value})).rowcount
        refold_period(conn, row["org_id"], start, end if end < row["backfill_to"] else None)
        key = (d.org_id == row["org_id"], d.slot == row["slot"])
        if end >= row["backfill_to"] and removing:
            conn.execute(delete(org_dimensions).where(*key))
            return {**row, "status": "removed"}
        status = READY if end >= row["backfill_to"] else row["status"]
        conn.execute(
            update(org_dimensions)
            .where(*key)
            .values(done_until=end, status=status, rows_done=d.rows_done + max(changed, 0))
        )
        return {**row, "done_until": end, "status": status}
