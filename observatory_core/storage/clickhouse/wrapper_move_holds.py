"""The waits and holds around a wrapper move (`wrapper_moves.py`; docs/span-store-internals.md
"Wrapper moves and their journal"): an org's earlier move's mutations waited on before its next move
reads the wrappers still flagged, and an org whose wait runs out held, its batches refused at once
for `HOLD_S` by this process, so that one org's stuck move costs the other orgs nothing (`ready`,
run before the process's write lock)."""

from __future__ import annotations

import threading
import time
from typing import Any

from observatory_core.base.errors import DatabaseUnavailable
from observatory_core.storage.clickhouse import layout
from observatory_core.storage.clickhouse.connect import SpanStore
from observatory_core.storage.clickhouse.wrapper_move_waits import running, wait

ROLLUPS = tuple(f"rollup_{grain}" for grain in layout.GRAIN_SECONDS)
WAIT_S = 15.0  # the org's earlier move's rollup mutations, before the next move (bounded)
HOLD_S = 30.0  # an org whose earlier move's mutations outlast WAIT_S: its batches refused
# at once for this long (`ready`), by this process: (store, org) -> when the hold ends
_HELD: dict[tuple[Any, int], float] = {}
# in-process stores (written by this process alone): the orgs whose move mutations this
# process sent and has not seen applied (`ready` reads `system.mutations` for those alone)
_MUTATING: set[tuple[Any, int]] = set()
_HELD_LOCK = threading.Lock()
# The move's mutations as `system.mutations` shows them (`wrapper_move_waits.own`): each
# rollup one names one bucket (the retention's lightweight deletes name a cutoff:
# `bucket_start <`), the flags' one its new value
# what a move corrects, for its messages: both kinds (`wrapper_moves.py`)
MOVES = "wrappers out of the LLM calls, twins restated"
BUCKET = "bucket_start = "
FLAGS = "llm_call = false"
SETS = " = multiIf("  # a twin's columns set (`wrapper_moves._clear_flags`)
TRACE = "trace_id = "  # a twin's trace totals (`move_traces.py`)
ACTORS = "rollup_actors_1hour"


_EARLIER = [("spans", FLAGS), ("spans", SETS), ("trace_totals", TRACE)]
_EARLIER += [(t, BUCKET) for t in (*ROLLUPS, ACTORS)]


def wait_for_earlier(store: SpanStore, org_id: int) -> None:
    """The org's earlier move's mutations, queued, applied by now to the org's rows (another
    org's are not waited on): its extremes as it set them, and its flags cleared, before the
    wrappers still flagged are read (a flag cleared after the read would have the wrapper
    moved twice) and before the extremes are judged again. Not in time: the org is held
    (`ready`)."""
    if late := wait(store, org_id, _EARLIER, WAIT_S):
        mutating(store, org_id, True)
        _hold(store, org_id)
        raise DatabaseUnavailable(
            f"The span store's {', '.join(late)} rows of org {org_id} are still being "
            f"rewritten after {WAIT_S:.0f} s (system.mutations): the org's earlier correction "
            f"of stored spans' figures ({MOVES}) is not finished yet; retry in {HOLD_S:.0f} s."
        )
    mutating(store, org_id, False)


def mutating(store: SpanStore, org_id: int, sent: bool) -> None:
    """Whether the org's move mutations are sent and not seen applied (`_MUTATING`)."""
    with _HELD_LOCK:
        if sent:
            _MUTATING.add((store.target, org_id))
        else:
            _MUTATING.discard((store.target, org_id))


def _hold(store: SpanStore, org_id: int) -> None:
    with _HELD_LOCK:
        _HELD[(store.target, org_id)] = time.monotonic() + HOLD_S


def ready(store: SpanStore, org_ids: list[int]) -> None:
    """Run before a batch takes the process's write lock (`writes._write`), so that one org's
    stuck move costs the other orgs nothing: an org held (its earlier move's mutations
    outlasted `WAIT_S` lately) is refused at once; an org with a move mutation of its own
    still running (one read of `system.mutations`; on an in-process store, written by this
    process alone, only for the orgs it sent some to and has not seen applied) is waited for
    here, outside the lock, and held and refused when it is not done in time. Under the lock
    `wait_for_earlier` then finds them done (or, sent by another process meanwhile, or left
    by an earlier run of this one, waits once more, and holds the org when it runs out)."""
    if store.naming.cluster or not org_ids:
        return
    now = time.monotonic()
    with _HELD_LOCK:
        held = [o for o in org_ids if _HELD.get((store.target, o), 0.0) > now]
        if store.target.in_process:
            org_ids = [o for o in org_ids if (store.target, o) in _MUTATING]
    if held:
        raise DatabaseUnavailable(
            f"Org {held[0]}'s earlier correction of stored spans' figures in the span store "
            f"({MOVES}) is not finished yet: its spans are refused for "
            f"up to {HOLD_S:.0f} s more; retry then."
        )
    for org_id in running(store, org_ids, _EARLIER) if org_ids else []:
        wait_for_earlier(store, org_id)
