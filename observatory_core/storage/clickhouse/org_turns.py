"""Each org's write turn on the span store, shared by every process that writes to it, kept in
`DATABASE_URL` (docs/span-store-internals.md, "The write turn").

The span store's views count every inserted row and cannot take one back out, so the writer's
"already stored?" check and its insert must not interleave with another writer's for the same
spans, in this process (`SpanStore.write_lock`) or in another server sharing the store. A
span belongs to one org, so the turn is per org: writers of different orgs never wait on
each other.

Each `DATABASE_URL` store keeps them its own way (`Store.org_turns`,
`storage/stores/_turns.py`): PostgreSQL an advisory lock per org, taken in org order and let
go at commit or when the holder's connection is lost; SQLite a lock file per org beside the
database file (its one write lock would stop every other writer of `DATABASE_URL` for the
length of an insert into the span store); a database in memory belongs to one process, whose
own lock is the turn. A turns folder that cannot be written is a `ConfigError`, not a 503 to
retry for ever.

A turn not had within `WAIT_S` is answered as `DatabaseUnavailable` (503 to an exporter,
which retries), not an endless wait behind a writer that hangs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from functools import partial

from sqlalchemy.engine import Engine

from observatory_core.base.errors import DatabaseUnavailable
from observatory_core.storage.stores import store_for
from observatory_core.storage.stores._turns import TurnBusy

WAIT_S = 120.0  # longer than an insert may take (`connect.py`: 60 s per statement)

OrgTurns = Callable[[Iterable[int]], AbstractContextManager[None]]


def org_turns(engine: Engine) -> OrgTurns:
    """`turns(org_ids)`: a context that holds those orgs' write turns (see above)."""
    return partial(_held, engine)


@contextmanager
def _held(engine: Engine, org_ids: Iterable[int]) -> Iterator[None]:
    orgs = sorted({int(org) for org in org_ids})
    with ExitStack() as stack:
        try:  # taking the turns: the caller's own body is outside
            stack.enter_context(store_for(engine).org_turns(engine, orgs, WAIT_S))
        except TurnBusy as exc:
            raise DatabaseUnavailable(
                f"Another writer held the span store's write turn of org {exc.org} for over "
                f"{WAIT_S:g} s ({exc.detail}); retry."
            ) from exc
        yield


@contextmanager
def own_process(org_ids: Iterable[int]) -> Iterator[None]:
    """No turn beyond this process's own lock (`SpanStore.write_lock`, which callers hold)."""
    yield
