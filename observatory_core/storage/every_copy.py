"""`spans` as stored, for a set of trace ids: every copy of each span, not the newest copy.

On the span store, `spans` compiles to a derived table that picks each span's newest copy
(storage/stores/clickhouse.py); this second name of the same table compiles to the raw table.
It holds only columns every copy holds alike (`SAME_IN_EVERY_COPY`), so what it selects by
them is the same whichever copy it reads, with no newest copy to pick: the traces that started
in a window, say, to bound a read of their whole trees (docs/scale.md, "The Sessions list's
trees and the value lists, bounded"). On SQLite and PostgreSQL it is `spans` itself.
"""

from __future__ import annotations

from sqlalchemy import Column, MetaData, Table

from observatory_core.storage.schema import spans

every_copy = Table(
    "spans",
    MetaData(),
    *(
        Column(name, spans.c[name].type)
        for name in ("org_id", "project_id", "trace_id", "start_time")
    ),
)
