"""One call sent twice counts once (docs/ingestion.md, "A call instrumented twice").

An app instrumented twice (a provider SDK's own GenAI spans beside an instrumentation library,
or two libraries on one client) sends each LLM call as two spans: in two separate traces, or
nested (one the parent of the other). Inside the batch's transaction, after its spans are
stored and before they are folded into the rollups, `settle` pairs each new LLM span with its
twin (in the batch, or stored within the look-back), keeps the richer one counting and marks
the other `duplicate_of` it. It answers the stored spans whose figures changed (a counted span
that stopped counting, or gained a model), whose rollup buckets and trace totals the caller
refolds (`rollups/refold.py`).
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Table, and_, delete, func, select, tuple_, update
from sqlalchemy.engine import Connection, Engine

from observatory_core.accounts.permissions import Permission
from observatory_core.accounts.scope import Scope, span_conditions
from observatory_core.rollups.partials import SOURCE_COLUMNS
from observatory_core.semantic.fields import LLM_OPERATIONS  # only such spans are paired
from observatory_core.storage.schema import orgs, spans

# Two spans of separate traces are one call only if both start and both end this close.
TOLERANCE = timedelta(milliseconds=50)
# A new span is compared with stored spans that started at most this long before it arrived
# (its start against the server's clock); an older span only with the spans of its own batch.
LOOKBACK = timedelta(minutes=30)
# New spans whose stored twins are looked up together, per query
_CHUNK = 500
# What makes a span's content richer: the one with more of these counts.
RICHNESS = ("input_text", "output_text", "finish_reason", "user_id", "session_id")
# What the counted span takes from its twin when it has none of its own.
COPIED = ("provider", "model", "error_type", "error_message")
COST = ("input_cost_usd", "output_cost_usd", "total_cost_usd", "cost_source")

ZERO = timedelta(0)
_DATED = re.compile(r"(-\d{4}-\d{2}-\d{2}|-\d{8}|@\d{8})$")

_COLUMNS = (
    "id",
    "org_id",
    "project_id",
    "trace_id",
    "span_id",
    "parent_span_id",
    "start_time",
    "end_time",
    "operation",
    "service_name",
    "scope_name",
    "input_tokens",
    "output_tokens",
    "status",
    *RICHNESS,
    *COPIED,
    *COST,
)


def normal_model(model: str | None) -> str | None:
    """`openai/gpt-4o-2024-08-06` and `gpt-4o` name one model: no provider prefix, no date."""
    if not model:
        return None
    name = model.strip().lower().rsplit("/", 1)[-1]
    return _DATED.sub("", name) or None


@dataclass(frozen=True)
class Touched:
    """A stored span (of an earlier batch) whose figures changed: refold its buckets."""

    org_id: int
    trace_id: str
    start_time: datetime


def _richness(row: dict) -> int:
    return sum(1 for name in RICHNESS if row.get(name))


def _nested(a: dict, b: dict) -> bool:
    return a["trace_id"] == b["trace_id"] and (
        a["parent_span_id"] == b["span_id"] or b["parent_span_id"] == a["span_id"]
    )


def instance(attributes: Any) -> Any:
    resource = attributes.get("resource") if isinstance(attributes, dict) else None
    return resource.get("service.instance.id") if isinstance(resource, dict) else None


def twins(a: dict, b: dict) -> str | None:
    """'nested' or 'separate' when `a` and `b` are one call sent twice, else None (the safe
    rules of docs/ingestion.md; the instance is compared by the caller)."""
    if a["id"] == b["id"] or a["org_id"] != b["org_id"] or a["project_id"] != b["project_id"]:
        return None
    if not a["scope_name"] or not b["scope_name"] or a["scope_name"] == b["scope_name"]:
        return None
    if a["service_name"] != b["service_name"]:
        return None
    if (a["input_tokens"], a["output_tokens"]) != (b["input_tokens"], b["output_tokens"]):
        return None
    ma, mb = normal_model(a["model"]), normal_model(b["model"])
    if _nested(a, b):  # on a failed call one of the pair may lack the model
        return "nested" if ma is None or mb is None or ma == mb else None
    if ma is None or ma != mb:
        return None
    if abs(a["start_time"] - b["start_time"]) > TOLERANCE:
        return None
    if abs(a["end_time"] - b["end_time"]) > TOLERANCE:
        return None
    return "separate"


def pick_keeper(a: dict, b: dict, batch: set[int]) -> tuple[dict, dict]:
    """(the span that counts, its duplicate): the richer content; then one already stored
    (nothing to refold); then the parent of a nested pair; then the first stored."""

    def rank(row: dict, other: dict) -> tuple:
        return (
            _richness(row),
            row["id"] not in batch,
            row["span_id"] == other["parent_span_id"] and row["trace_id"] == other["trace_id"],
            -row["id"],
        )

    return (a, b) if rank(a, b) >= rank(b, a) else (b, a)


def _enabled_orgs(conn: Connection, org_ids: Iterable[int]) -> set[int]:
    ids = sorted(set(org_ids))
    if not ids:
        return set()
    query = select(orgs.c.id).where(orgs.c.id.in_(ids), orgs.c.dedup_enabled.is_(True))
    return set(conn.execute(query).scalars())


def _candidates(conn: Connection, *where) -> list[dict]:
    query = select(*(spans.c[n] for n in _COLUMNS)).where(
        spans.c.operation.in_(LLM_OPERATIONS),
        spans.c.scope_name.is_not(None),
        spans.c.duplicate_of.is_(None),
        *where,
    )
    return [dict(r) for r in conn.execute(query).mappings()]


def windows(rows: list[dict]) -> list[tuple[int, datetime, datetime]]:
    """Per org, the new spans' start times merged into few ranges (a second apart at most)."""
    out: list[tuple[int, datetime, datetime]] = []
    for row in sorted(rows, key=lambda r: (r["org_id"], r["start_time"])):
        org, start = row["org_id"], row["start_time"]
        if out and out[-1][0] == org and start - out[-1][2] <= timedelta(seconds=1):
            out[-1] = (org, out[-1][1], start)
        else:
            out.append((org, start, start))
    return [(org, lo - TOLERANCE, hi + TOLERANCE) for org, lo, hi in out]


def _pool(conn: Connection, fresh: list[dict], since: datetime) -> dict[int, dict]:
    """The fresh spans and every stored span that could be the twin of one: in the same
    trace (nested) or starting within the tolerance (separate), indexed lookups both. Only
    spans started `since` (the look-back) are looked up; older ones pair within their batch,
    which `fresh` already holds."""
    pool = {r["id"]: r for r in fresh}
    recent = [r for r in fresh if r["start_time"] >= since]
    c = spans.c
    for org, lo, hi in windows(recent):
        for r in _candidates(conn, c.org_id == org, c.start_time >= lo, c.start_time <= hi):
            pool.setdefault(r["id"], r)
    keys = sorted({(r["org_id"], r["trace_id"]) for r in recent})
    for i in range(0, len(keys), _CHUNK):
        chunk = keys[i : i + _CHUNK]
        for r in _candidates(conn, tuple_(c.org_id, c.trace_id).in_(chunk)):
            pool.setdefault(r["id"], r)
    return pool


def _same_instance(conn: Connection, a: dict, b: dict) -> bool:
    """Where both resources name their instance (`service.instance.id`), it must be one."""
    rows = conn.execute(
        select(spans.c.id, spans.c.attributes).where(spans.c.id.in_((a["id"], b["id"])))
    ).all()
    found = {instance(attributes) for _, attributes in rows}
    found.discard(None)
    return len(found) <= 1


def settle(conn: Connection, new: Table, now: datetime) -> list[Touched]:
    """Pair the batch's new LLM spans (in `new`, at least their ids) with their twins, mark
    each pair's duplicate, leave only counted spans in `new` (with what they took from their
    twin), and answer the stored spans whose figures changed."""
    c = spans.c
    fresh = _candidates(conn, c.id.in_(select(new.c.id)))
    enabled = _enabled_orgs(conn, (r["org_id"] for r in fresh))
    fresh = [r for r in fresh if r["org_id"] in enabled]
    if not fresh:
        return []
    batch = set(select_ids(conn, new))
    pool = _pool(conn, fresh, now - LOOKBACK)
    nearby = Nearby(pool.values())
    settled: set[int] = set()  # spans paired in this batch: one pair each
    changed: set[int] = set()  # spans whose row changed here
    touched: list[Touched] = []
    for row in sorted(fresh, key=lambda r: (r["start_time"], r["id"])):
        if row["id"] in settled:
            continue
        recent = row["start_time"] >= now - LOOKBACK
        best: tuple[timedelta, dict] | None = None
        for other in nearby.of(row):
            if other["id"] in settled or (other["id"] not in batch and not recent):
                continue
            kind = twins(row, other)
            if kind is None:
                continue
            gap = abs(row["start_time"] - other["start_time"]) if kind == "separate" else ZERO
            if (best is None or gap < best[0]) and _same_instance(conn, row, other):
                best = (gap, other)
        if best is None:
            continue
        keeper, duplicate = pick_keeper(row, best[1], batch)
        settled |= {keeper["id"], duplicate["id"]}
        _mark(conn, keeper, duplicate)
        gained = _take(conn, keeper, duplicate)
        changed |= {duplicate["id"], keeper["id"]} if gained else {duplicate["id"]}
        for span in (duplicate, keeper) if gained else (duplicate,):
            if span["id"] not in batch:
                touched.append(Touched(span["org_id"], span["trace_id"], span["start_time"]))
    _refresh(conn, new, changed & batch)
    return touched


class Nearby:
    """The pool indexed for the two patterns: a span's parent and children in its trace, and
    the spans of its org starting within the tolerance."""

    def __init__(self, rows: Iterable[dict]) -> None:
        self.spans: dict[tuple, dict] = {}
        self.children: dict[tuple, list[dict]] = {}
        self.starts: dict[int, list[tuple[datetime, int, dict]]] = {}
        for r in rows:
            self.spans[(r["org_id"], r["trace_id"], r["span_id"])] = r
            key = (r["org_id"], r["trace_id"], r["parent_span_id"])
            self.children.setdefault(key, []).append(r)
            self.starts.setdefault(r["org_id"], []).append((r["start_time"], r["id"], r))
        # each org's start times alone, beside `starts`: bisected without a key function
        self.times: dict[int, list[datetime]] = {}
        for org, starts in self.starts.items():
            starts.sort(key=lambda item: (item[0], item[1]))
            self.times[org] = [item[0] for item in starts]

    def of(self, row: dict) -> list[dict]:
        org, trace = row["org_id"], row["trace_id"]
        out = list(self.children.get((org, trace, row["span_id"]), ()))
        parent = self.spans.get((org, trace, row["parent_span_id"]))
        if parent is not None:
            out.append(parent)
        starts, times = self.starts.get(org, []), self.times.get(org, [])
        start = row["start_time"]
        i = bisect_left(times, start - TOLERANCE)
        last = start + TOLERANCE
        while i < len(times) and times[i] <= last:
            out.append(starts[i][2])
            i += 1
        return out


def select_ids(conn: Connection, new: Table) -> list[int]:
    return list(conn.execute(select(new.c.id)).scalars())


def _mark(conn: Connection, keeper: dict, duplicate: dict) -> None:
    """`duplicate` stops counting; spans that were its duplicates now point at `keeper`."""
    c = spans.c
    values = {"duplicate_of": keeper["span_id"], "duplicate_trace_id": keeper["trace_id"]}
    conn.execute(update(spans).where(c.id == duplicate["id"]).values(**values))
    conn.execute(
        update(spans)
        .where(
            c.org_id == duplicate["org_id"],
            c.duplicate_trace_id == duplicate["trace_id"],
            c.duplicate_of == duplicate["span_id"],
        )
        .values(**values)
    )


def taken(keeper: dict, duplicate: dict) -> dict[str, Any]:
    """What the counted span takes from its twin: what only the twin has (the model, the error
    message), and the cost its model prices when the counted span is unpriced (every store)."""
    values = {n: duplicate[n] for n in COPIED if not keeper[n] and duplicate[n]}
    if keeper["cost_source"] == "unpriced" and duplicate["cost_source"] != "unpriced":
        values.update({n: duplicate[n] for n in COST})
    return values


def _take(conn: Connection, keeper: dict, duplicate: dict) -> bool:
    """Copy to the counted span what only its twin has (`taken`); whether a figure of the
    counted span changed."""
    values = taken(keeper, duplicate)
    if not values:
        return False
    conn.execute(update(spans).where(spans.c.id == keeper["id"]).values(**values))
    keeper.update(values)
    return bool(set(values) - {"error_type", "error_message"})


def leave_out_sent_twins(conn: Connection, new: Table) -> None:
    """Spans that arrive already set aside (`duplicate_of` written by the sender: an imported
    export holding twins) leave `new`, as `_refresh` keeps it: the fold adds counted spans
    only, and the raw reads leave these out too."""
    twins = select(spans.c.id).where(
        spans.c.id.in_(select(new.c.id)), spans.c.duplicate_of.is_not(None)
    )
    conn.execute(delete(new).where(new.c.id.in_(twins)))


def _refresh(conn: Connection, new: Table, ids: set[int]) -> None:
    """`new` holds the batch's counted spans as they now stand: the fold adds only those."""
    if not ids:
        return
    conn.execute(delete(new).where(new.c.id.in_(sorted(ids))))
    names = [n for n in SOURCE_COLUMNS if n in new.c]
    source = select(*(spans.c[n] for n in names)).where(
        spans.c.id.in_(sorted(ids)), spans.c.duplicate_of.is_(None)
    )
    conn.execute(new.insert().from_select(names, source))


def set_aside_by_scopes(
    engine: Engine, scope: Scope, *, now: datetime | None = None, hours: int = 24
) -> list[dict]:
    """For the Admin page: the duplicates set aside in the last `hours`, per pair of scopes
    (the duplicate's, the counted span's), most first."""
    scope.require(Permission.ADMIN)
    now = now or datetime.now(UTC)
    dup, kept = spans.alias("dup"), spans.alias("kept")
    pair = (dup.c.scope_name.label("duplicate_scope"), kept.c.scope_name.label("counted_scope"))
    query = (
        select(*pair, func.count().label("duplicates"))
        .select_from(
            dup.join(
                kept,
                and_(
                    kept.c.org_id == dup.c.org_id,
                    kept.c.trace_id == dup.c.duplicate_trace_id,
                    kept.c.span_id == dup.c.duplicate_of,
                ),
            )
        )
        .where(
            *span_conditions(scope, dup),
            dup.c.duplicate_of.is_not(None),
            dup.c.start_time >= now - timedelta(hours=hours),
        )
        .group_by(*pair)
        .order_by(func.count().desc(), *pair)
    )
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(query).mappings()]
