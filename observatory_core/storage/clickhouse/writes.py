"""Canonical span rows (`ingest/spanrows.py`'s `complete_row`) into the span store, each span
counted once.

A span sent twice must never count twice: not in a list, and not in the rollups and trace
totals, which materialized views fold from every inserted row. So each batch first drops its
own repeats (the first copy stays, as elsewhere) and the spans already stored (looked up by
org and span id, the id's bloom filter skipping granules; the trace id is compared on the
rows found), then inserts only new spans; the views see each span once. Writers take turns
around the check and the insert: in one process (`SpanStore.write_lock`) and, given `turn`
(`org_turns.py`, the batch's orgs' turns in `DATABASE_URL`, which ingest and `migrate-spans`
pass), across the processes that share the store. A span is stored once whatever its start
time: a copy with another start is a span already stored. Reads take each stored row as one
span (`fold_copies.py`): without `turn` only this process's writers take turns, which serves
where one process alone can open the store (chDB); a server's store is refused without it. Spans found stored are the sign of a retry:
what an earlier insert of them whose views failed part-way left out of the rollups and trace
totals is put back after the batch's own insert, under the same turn (`view_gaps.py`; a
failure there is logged, and the batch stands). On a cluster the insert returns once every shard
has stored its rows, so the next batch's check sees them (`cluster.WRITE_SETTINGS`).

The ingest write path (`ingest/to_clickhouse.py`) passes `prepare`, which sees each batch's new
spans under the same turn, after the check and before the insert (twins set aside, LLM calls
settled, dimension slots filled), and `after`, run under the turn once the insert is done (the
moves of stored wrappers it journaled). Every batch's turn, whoever writes, begins with its
orgs' wrapper moves an earlier batch left pending (`wrapper_moves.take_in`: nothing of an org
is written before them, which lets a move's insert sent again be judged by its counts); an org
with a stuck one is refused before the process's lock is taken (`wrapper_move_holds.ready`). A
failure worth a retry (the server unreachable, too many parts, out of memory, a timeout) is
raised as `DatabaseUnavailable`, which ingest answers 503.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from itertools import islice
from operator import itemgetter
from typing import Any, NamedTuple

from observatory_core.base.errors import DatabaseUnavailable, first_line
from observatory_core.storage.clickhouse import layout, wrapper_move_holds, wrapper_moves
from observatory_core.storage.clickhouse.cluster import SAME_REPLICA, WRITE_SETTINGS
from observatory_core.storage.clickhouse.connect import SpanStore
from observatory_core.storage.clickhouse.org_turns import OrgTurns, own_process
from observatory_core.storage.clickhouse.view_gaps import SETTLE, fill_gaps
from observatory_core.storage.schema import DIMENSION_SLOTS

BATCH = 50_000  # rows per insert: ClickHouse wants few large inserts (each makes a part)
_STORED = set(layout.span_column_names())
# written by this module, not by the row
_OWN = (layout.VERSION, layout.RETAIN_DAYS)
# ClickHouse error codes that say "not now" rather than "not this": retried by the exporter.
# 159 TIMEOUT_EXCEEDED, 202 TOO_MANY_SIMULTANEOUS_QUERIES, 209 SOCKET_TIMEOUT, 210
# NETWORK_ERROR, 241 MEMORY_LIMIT_EXCEEDED, 242 TABLE_IS_READ_ONLY, 252 TOO_MANY_PARTS,
# 279 ALL_CONNECTION_TRIES_FAILED, 319 UNKNOWN_STATUS_OF_INSERT, 425 SYSTEM_ERROR,
# 999 KEEPER_EXCEPTION
RETRYABLE = frozenset({159, 202, 209, 210, 241, 242, 252, 279, 319, 425, 999})
_CODE = re.compile(r"\bCode:\s*(\d+)")
log = logging.getLogger("observatory.span_store")


class JsonText(str):
    """A JSON column's value already encoded (a span copied from another store's JSON text,
    `migrate_spans.py`): written as it is, not decoded and encoded again."""


def _batches(rows: Iterable[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    it = iter(rows)
    while batch := list(islice(it, size)):
        yield batch


_PAIR = itemgetter("org_id", "project_id")


def _first_copies(batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: set[tuple[int, str, str]] = set()
    out = []
    for row in batch:
        key = (row["org_id"], row["trace_id"], row["span_id"])
        if key not in seen:
            seen.add(key)
            out.append(row)
    return out


# A span this close to its retention's end is taken as expired: the engine applies the TTL as it
# writes the part, after the views have counted the rows, so such a span would be counted and
# not stored, and counted again when sent again.
EXPIRY_MARGIN = timedelta(minutes=1)


def retainer(days: Mapping[tuple[int, int], int]) -> Callable[[int, int], int]:
    """`retain(org, project)`: the project's days in `days`, else the org's ((org, 0)), else 0."""

    def retain(org_id: int, project_id: int) -> int:
        return layout.ttl_days(days.get((org_id, project_id), days.get((org_id, 0), 0)))

    return retain


def retained(batch: list[dict[str, Any]], retain: Callable) -> dict[tuple[int, int], int]:
    """`retain(org, project)` of each (org, project) in the batch: worked out once a pair, not
    once a row (a batch holds a few pairs)."""
    return {pair: retain(*pair) for pair in set(map(_PAIR, batch))}


def unexpired(batch: list[dict[str, Any]], retain: Callable) -> list[dict[str, Any]]:
    """The rows not past their retention (`retain(org, project)` days, 0: kept), worked out
    per (org, project) of the batch."""
    days = retained(batch, retain)
    if not any(days.values()):
        return list(batch)
    cutoff = datetime.now(UTC) + EXPIRY_MARGIN
    # start + d > cutoff <=> start > cutoff - d (exact: whole microseconds)
    since = {pair: cutoff - timedelta(days=d) for pair, d in days.items() if d}
    return [
        row
        for row in batch
        if (after := since.get((row["org_id"], row["project_id"]))) is None
        or row["start_time"] > after
    ]


def plain_list(values: list[str]) -> str | None:
    """`values` as a statement's literal for `IN` when each is letters and digits alone (OTLP's
    hex ids), else None: bind them then, escaped by the driver, whose binding of a batch's
    2,048 ids took 7 ms of Python against 0.3 ms for this."""
    if values and all(v.isascii() and v.isalnum() for v in values):
        return "(" + ",".join(f"'{v}'" for v in values) + ")"
    return None


class Stored(NamedTuple):
    """A span the store already holds: its start time (the earliest, should copies with
    other starts be stored) and when it was last written (`layout.VERSION`, microseconds)."""

    start: datetime
    version: int
    projects: tuple[int, ...]  # its project (or each of its copies')


def stored_starts(
    store: SpanStore, batch: list[dict[str, Any]]
) -> dict[tuple[int, str, str], Stored]:
    """(org, trace, span) -> `Stored` of the batch's spans the store already holds."""
    by_org: dict[int, set[str]] = {}
    for row in batch:
        by_org.setdefault(row["org_id"], set()).add(row["span_id"])
    found: dict[tuple[int, str, str], Stored] = {}
    for org_id, span_ids in by_org.items():
        ids = sorted(span_ids)
        listed = plain_list(ids)
        params: dict[str, Any] = (
            {"org": int(org_id)} if listed else {"org": int(org_id), "ids": ids}
        )
        result = store.client.query(
            f"SELECT trace_id, span_id, min(start_time), max({layout.VERSION}), "
            "groupUniqArray(project_id) "
            f"FROM {store.table('spans')} "
            f"WHERE org_id = %(org)s AND span_id IN {listed or '%(ids)s'} "
            "GROUP BY trace_id, span_id",
            parameters=params,
            settings={
                # the ids are written into the statement: ~19 bytes each, past the 256 KiB default
                "max_query_size": 64 + 24 * len(span_ids) + 4096,
                # on a cluster: the replicas the inserts go to (`cluster.SAME_REPLICA`)
                **store.naming.settings(SAME_REPLICA),
            },
        )
        for trace, span, start, version, projects in result.result_rows:
            found[(org_id, trace, span)] = Stored(start, int(version), tuple(projects))
    return found


def ids_query_size(store: SpanStore, ids: int) -> dict[str, Any]:
    """Settings for a read with `ids` ids written into its statement (as `stored_starts`
    writes them); on a cluster, read from the replicas the inserts go to, as that check is
    (`cluster.SAME_REPLICA`)."""
    return {"max_query_size": 8192 + 40 * ids, **store.naming.settings(SAME_REPLICA)}


def only_written_here(
    store: SpanStore,
    batch: list[dict[str, Any]],
    mine: Mapping[int, int],
    retain: Callable,
    versions: Collection[int],
) -> bool:
    """Whether the store holds, of the batch's orgs, exactly the `mine[org]` spans this write
    inserted (at `versions`) and nothing else: then, for input that holds each span once, none
    of the batch's spans is stored and the look-up (`stored_starts`) can be skipped. A row of
    another version is another writer's (found in review: a count alone passed when one of
    ours was deleted as another writer added one); a row of ours gone changes the count. With
    a retention set on a batch row the TTL may drop rows: not skipped."""
    orgs = sorted({row["org_id"] for row in batch})
    if not orgs:  # nothing to look up
        return True
    if any(retained(batch, retain).values()):  # per (org, project), not per row
        return False
    result = store.client.query(
        f"SELECT org_id, count(), countIf({layout.VERSION} NOT IN %(versions)s) "
        f"FROM {store.table('spans')} WHERE org_id IN %(orgs)s GROUP BY org_id",
        parameters={"orgs": orgs, "versions": sorted(versions) or [0]},
        settings=store.naming.settings(SAME_REPLICA),
    )
    counts = {int(org): (int(n), int(others)) for org, n, others in result.result_rows}
    return all(counts.get(org, (0, 0)) == (mine.get(org, 0), 0) for org in orgs)


_TIMES = frozenset(c.name for c in layout.span_columns() if layout.TIME in c.type)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)


def _micros(value: datetime | None) -> int | None:
    """A time as the column's microseconds since 1970, which the driver writes as they are
    (its own conversion of each datetime took a tenth of the insert's Python); a time without
    a zone as the driver takes it (the process's local time)."""
    if value is None or isinstance(value, int):
        return value
    if value.tzinfo is None:  # round: a pandas.Timestamp's timestamp() rounds its nanoseconds
        return round(value.timestamp() - value.microsecond / 1e6) * 1_000_000 + value.microsecond
    return (value - _EPOCH) // _MICRO


_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
_encoders = threading.local()


def _dumps(value: Any) -> str:
    """`_JSON.encode(value)`, with the C encoder it makes for each call made once per thread
    (half the time of a span's attributes). An encoder that failed is not used again: it keeps
    the failed value's containers as seen (its check for cycles), so one of them encoded next
    would be refused as a circular reference."""
    encoder = getattr(_encoders, "encoder", None)
    if encoder is None:
        if json.encoder.c_make_encoder is None:  # no C extension: as before
            return _JSON.encode(value)
        encoder = _encoders.encoder = json.encoder.c_make_encoder(
            {},
            _JSON.default,
            json.encoder.encode_basestring,
            None,
            _JSON.key_separator,
            _JSON.item_separator,
            False,
            False,
            True,
        )
    try:
        return "".join(encoder(value, 0))
    except BaseException:
        _encoders.encoder = None
        raise


def as_columns(
    rows: list[dict[str, Any]], names: tuple[str, ...], version: int, retain: Callable
) -> list[list[Any]]:
    """The rows as columns (the driver's fastest insert), in `names` order: `version` on
    every row, `retain(org, project)` its retention days (worked out once per (org, project)).
    Plain comprehensions, column by column: taking each row's values in one pass
    (`itemgetter(*names)`, transposed), `map(itemgetter(name), rows)`, or the times'
    arithmetic in C (`map(sub, ...)`) measured no faster on 50k demo rows (2026-12), and the
    transposed tuples slower for the collector; fetching each row's dict again for each column
    is most of the cost."""
    out: list[list[Any]] = []
    dumps = _dumps
    for name in names:
        if name in _TIMES:
            out.append([_micros(r[name]) for r in rows])
        elif name == layout.VERSION:
            out.append([version] * len(rows))
        elif name == layout.RETAIN_DAYS:
            out.append(_retain_column(rows, retain))
        elif name in layout.JSON_TEXT:
            out.append([v if isinstance(v := r[name], JsonText) else dumps(v) for r in rows])
        elif name == "tags":
            out.append([[str(t) for t in (r[name] or ())] for r in rows])
        elif name in DIMENSION_SLOTS:  # filled from the org's declarations: not yet here
            out.append([r.get(name) for r in rows])
        else:  # a complete row has every other column
            out.append([r[name] for r in rows])
    return out


def _retain_column(rows: list[dict[str, Any]], retain: Callable) -> list[int]:
    """Each row's `retain(org, project)`, worked out per (org, project) and looked up per row;
    one value for the whole batch (as when no retention is set) without a look-up."""
    days = retained(rows, retain)
    if len(set(days.values())) <= 1:
        return [next(iter(days.values()), 0)] * len(rows)
    nested: dict[int, dict[int, int]] = {}
    for (org_id, project_id), d in days.items():
        nested.setdefault(org_id, {})[project_id] = d
    return [nested[r["org_id"]][r["project_id"]] for r in rows]


def retryable(exc: BaseException) -> bool:
    """A failure of the store (unreachable, busy, out of memory), not of the rows written."""
    from clickhouse_connect.driver.exceptions import OperationalError

    if isinstance(exc, OperationalError):  # the connection, not the statement
        return True
    code = getattr(exc, "code", None)
    if code is None and (found := _CODE.search(str(exc))):
        code = int(found.group(1))
    return code in RETRYABLE


def unavailable(store: SpanStore, exc: BaseException) -> DatabaseUnavailable:
    first = first_line(exc)
    return DatabaseUnavailable(
        f"The span store at {store.target.describe()} is unavailable or busy ({first}); retry."
    )


Prepare = Callable[[SpanStore, list[dict[str, Any]]], list[dict[str, Any]]]
After = Callable[[SpanStore], object]


def write_spans(
    store: SpanStore,
    rows: Iterable[dict[str, Any]],
    *,
    batch_size: int = BATCH,
    retain_days: Mapping[tuple[int, int], int] | None = None,
    prepare: Prepare | None = None,
    on_batch: Callable[[int, int], None] | None = None,
    turn: OrgTurns | None = None,
    each_once: bool = False,
    after: After | None = None,
) -> int:
    """Store complete span rows; answers how many were new (a span already stored, or repeated
    in the input, is not written again). `retain_days[(org, project)]` (or `(org, 0)` for the
    whole org) sets the retention hook of the rows it names (0 or missing: kept until deleted);
    a span already past it is neither stored nor counted (`EXPIRY_MARGIN`).
    `prepare(store, new_rows)` answers the rows to insert, `after(store)` follows the insert
    (see above); `on_batch(seen,
    written)` after each batch, for progress bars. Raises `DatabaseUnavailable` when the store
    fails in a way worth a retry. `each_once`: the input holds each span once (the demo
    generator's, whose ids are random): while the store holds of its orgs only what this write
    inserted, the batch's spans are not looked up (`only_written_here`)."""
    from clickhouse_connect.driver.exceptions import ClickHouseError

    if turn is None and not store.target.in_process:
        raise ValueError(
            "A span store on a server is written under the orgs' write turns (pass `turn`, "
            "org_turns.py): several processes may write it, and a span two of them stored "
            "would be read twice (docs/span-store-internals.md, 'The write turn')."
        )
    try:
        return _write(
            store,
            rows,
            batch_size,
            retain_days or {},
            prepare,
            on_batch,
            turn,
            each_once,
            after,
        )
    except ClickHouseError as exc:
        if retryable(exc):
            raise unavailable(store, exc) from exc
        raise


@contextmanager
def org_turn(store: SpanStore, turn: OrgTurns | None, org_ids: list[int]) -> Iterator[None]:
    """Where anything of the orgs is written: their turn (the process's lock, then each org's
    across processes), their pending wrapper moves taken in first, as a move journaled its
    counts on the rule that nothing of the org is written before its next turn finishes it
    (`wrapper_moves.take_in`); an org's stuck move is waited on before the lock, so it holds
    back no other org (`wrapper_move_holds.ready`)."""
    wrapper_move_holds.ready(store, org_ids)
    with store.write_lock, (turn or own_process)(org_ids):
        wrapper_moves.take_in(store, org_ids)
        yield


def _write(
    store: SpanStore,
    rows: Iterable[dict[str, Any]],
    batch_size: int,
    days: Mapping[tuple[int, int], int],
    prepare: Prepare | None,
    on_batch: Callable[[int, int], None] | None,
    turn: OrgTurns | None,
    each_once: bool = False,
    after: After | None = None,
) -> int:
    retain = retainer(days)
    count_org = itemgetter("org_id")
    names = layout.span_column_names()
    written = 0
    mine: dict[int, int] = {}  # spans this write inserted, by org
    versions: list[int] = []  # the versions of its inserts
    for batch in _batches(rows, batch_size):
        org_ids = sorted({r["org_id"] for r in batch})
        with org_turn(store, turn, org_ids):
            fresh = unexpired(_first_copies(batch), retain)
            if each_once and only_written_here(store, fresh, mine, retain, versions):
                known = {}
            else:
                known = stored_starts(store, fresh)
            if known:
                fresh = [
                    r for r in fresh if (r["org_id"], r["trace_id"], r["span_id"]) not in known
                ]
            if fresh and prepare is not None:
                fresh = prepare(store, fresh)
            version = time.time_ns() // 1000
            if fresh:
                store.client.insert(
                    store.table("spans"),
                    as_columns(fresh, names, version, retain),
                    column_names=list(names),
                    column_oriented=True,
                    # on a cluster: stored on every shard before the next batch's check
                    settings=store.naming.settings(WRITE_SETTINGS),
                )
                versions.append(version)
                for org_id, count in Counter(map(count_org, fresh)).items():
                    mine[org_id] = mine.get(org_id, 0) + count
                if after is not None:
                    after(store)
            if known:  # after the batch's own spans are safe, still under the turn
                _fill_resent_gaps(store, known, version)
        written += len(fresh)
        if on_batch:
            on_batch(len(batch), len(fresh))
    return written


def _fill_resent_gaps(
    store: SpanStore, known: Mapping[tuple[int, str, str], Stored], own: int
) -> None:
    """Spans sent again: what a failed insert of them left out of the views is put back
    (`view_gaps.py`). Spans written within `SETTLE` are left alone: their insert may still be
    running its views (the client gave up, the server did not), and would count them twice.
    `own`: the version of the batch's own insert, finished, so its spans need no settling.
    A repair that fails is logged, not raised: the batch's new spans are already stored, and
    a 503 would only have the exporter repeat the same failing work."""
    settled = (time.time_ns() // 1000) - int(SETTLE.total_seconds() * 1_000_000)
    by_org: dict[int, list[tuple[int, str, datetime]]] = {}
    for (org_id, trace_id, _), stored in known.items():
        if stored.version < settled:
            found = by_org.setdefault(org_id, [])
            found += [(project, trace_id, stored.start) for project in stored.projects]
    for org_id, found in by_org.items():
        try:
            fill_gaps(store, org_id, found, own=own)
        except Exception as exc:  # noqa: BLE001 - a repair's failure must not lose the batch
            first = first_line(exc)
            log.warning(
                "Span store: topping up the views' rows of org %s's %d resent spans failed "
                "(%s); a later resend tries again.",
                org_id,
                len(found),
                first,
            )


def written_extent(store: SpanStore) -> tuple[int, datetime | None]:
    """How many spans the store holds (copies not yet folded included) and the newest start:
    whether a first run's demo data is there, and how far it lags (`runtime/bootstrap.py`)."""
    ((count, newest),) = store.client.query(
        f"SELECT count(), if(count() = 0, NULL, max(start_time)) FROM {store.table('spans')}"
    ).result_rows
    if newest is not None and newest.tzinfo is None:
        newest = newest.replace(tzinfo=UTC)
    return int(count), newest
