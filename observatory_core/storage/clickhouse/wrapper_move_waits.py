"""The waits of a wrapper move (`wrapper_moves.py`, docs/span-store-internals.md "Wrapper moves and
their journal"), limited to the org's own rows: the move's mutations name the org (`org_id = N`),
and one is taken as applied once no part it has still to do holds a row of the org. So another org's
mutation that keeps failing (it holds back every later mutation of the parts it fails on) holds back
no move of an org whose rows are in other parts; each wait is bounded.
"""

from __future__ import annotations

import re
import time

from observatory_core.storage.clickhouse.connect import SpanStore
from observatory_core.storage.clickhouse.restamp import store_errors


def own(org_id: int, marker: str) -> str:
    """The org's move mutations as `system.mutations` shows them: their text names the org
    and `marker` (`bucket_start = ` for the rollups' deletes and updates, `llm_call = false`
    for the flags)."""
    return (
        f"match(command, '\\\\borg_id = {int(org_id)}\\\\b') AND position(command, '{marker}') > 0"
    )


def left(store: SpanStore, org_id: int, table: str, marker: str) -> int:
    """The org's rows of `table` still in a part that one of its move mutations (`own`) has
    to do: 0 when every one is applied to the org's rows."""
    with store_errors(store):
        ((n,),) = store.client.query(
            f"SELECT count() FROM {store.table(table)} WHERE org_id = %(org)s AND _part IN ("
            "SELECT arrayJoin(parts_to_do_names) FROM system.mutations "
            "WHERE database = %(db)s AND table = %(table)s AND NOT is_done "
            f"AND {own(org_id, marker)})",
            parameters={"org": org_id, "db": store.database, "table": table},
        ).result_rows
    return int(n)


def running(store: SpanStore, org_ids: list[int], waits: list[tuple[str, str]]) -> list[int]:
    """Those of the orgs with a move mutation (`own`, of a (table, marker) of `waits`) not
    done: one read of `system.mutations`, whichever parts it has still to do."""
    mine = " OR ".join(
        f"(table = '{t}' AND {own(o, m)})" for o in sorted(set(org_ids)) for t, m in waits
    )
    with store_errors(store):
        result = store.client.query(
            "SELECT command FROM system.mutations WHERE database = %(db)s AND NOT is_done "
            f"AND ({mine})",
            parameters={"db": store.database},
        )
    found = [command for (command,) in result.result_rows]
    return [
        o
        for o in sorted(set(org_ids))
        if any(re.search(rf"\borg_id = {int(o)}\b", command) for command in found)
    ]


def wait(
    store: SpanStore, org_id: int, waits: list[tuple[str, str]], timeout_s: float
) -> list[str]:
    """Wait until `left` is 0 for each (table, marker) of `waits`, together at most
    `timeout_s`: answers the tables still left then (none: all applied)."""
    deadline = time.monotonic() + timeout_s
    todo = list(waits)
    while todo:
        todo = [(t, m) for t, m in todo if left(store, org_id, t, m)]
        if not todo or time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    return [t for t, _ in todo]
