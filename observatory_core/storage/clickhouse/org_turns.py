"""Each org's write turn on the span store, shared by every process that writes to it, kept in
`DATABASE_URL` (docs/scale.md, "Each span once").

The span store's views count every inserted row and cannot take one back out, so the writer's
"already stored?" check and its insert must not interleave with another writer's for the same
spans, in this process (`SpanStore.write_lock`) or in another server sharing the store. A
span belongs to one org, so the turn is per org: writers of different orgs never wait on
each other.

- PostgreSQL: a transaction's advisory lock per org (`pg_advisory_xact_lock(TURNS, org)`,
  the two-key form, whose keys never meet the one-key locks of the rollup fold or the
  retention run), taken in org order so two writers of several orgs cannot deadlock, and
  released at commit, or by the server when the holder's connection is lost.
- SQLite: an exclusive `flock` on a file per org beside the database file
  (`<file>.span-turns/org-<id>`, opened read-only, so any user who can read it takes the
  turn), released when the file is closed or its process ends; a folder that cannot be
  written is a `ConfigError`, not a 503 to retry for ever.
  SQLite has no row locks, and its one write lock (`BEGIN IMMEDIATE`) would stop every other
  writer of `DATABASE_URL` (keys, ingest bookkeeping, jobs) for the length of an insert into
  the span store; processes sharing one SQLite file share its folder. A database in memory
  belongs to one process: the process's own lock is the turn.

A turn not had within `WAIT_S` is answered as `DatabaseUnavailable` (503 to an exporter,
which retries), not an endless wait behind a writer that hangs.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from functools import partial
from pathlib import Path

from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

from observatory_core.base.errors import ConfigError, DatabaseUnavailable

TURNS = 7_411_025  # the advisory lock's first key: any fixed number, the same in every process
WAIT_S = 120.0  # longer than an insert may take (`connect.py`: 60 s per statement)
SUFFIX = ".span-turns"
LOCK_NOT_AVAILABLE = "55P03"  # PostgreSQL's SQLSTATE when `lock_timeout` ends the wait

OrgTurns = Callable[[Iterable[int]], AbstractContextManager[None]]


def org_turns(engine: Engine) -> OrgTurns:
    """`turns(org_ids)`: a context that holds those orgs' write turns (see above)."""
    if engine.dialect.name == "postgresql":
        return partial(_advisory, engine)
    database = engine.url.database or ""
    if engine.dialect.name != "sqlite" or _in_memory(engine):
        return own_process
    return partial(_files, Path(database).resolve().parent / (Path(database).name + SUFFIX))


def _in_memory(engine: Engine) -> bool:
    database = engine.url.database or ""
    return (
        database in ("", ":memory:")
        or database.startswith("file::memory:")
        or engine.url.query.get("mode") == "memory"  # file:NAME?mode=memory&uri=true
    )


def _orgs(org_ids: Iterable[int]) -> list[int]:
    return sorted({int(org) for org in org_ids})


def _busy(org: int, detail: str) -> DatabaseUnavailable:
    return DatabaseUnavailable(
        f"Another writer held the span store's write turn of org {org} for over "
        f"{WAIT_S:g} s ({detail}); retry."
    )


@contextmanager
def own_process(org_ids: Iterable[int]) -> Iterator[None]:
    """No turn beyond this process's own lock (`SpanStore.write_lock`, which callers hold)."""
    yield


@contextmanager
def _advisory(engine: Engine, org_ids: Iterable[int]) -> Iterator[None]:
    orgs = _orgs(org_ids)
    with engine.connect() as conn, conn.begin():
        conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{int(WAIT_S * 1000)}ms'")
        # the transaction sits idle while the span store inserts: a server's idle timeout
        # would end it there, and let go of the turn mid-insert
        conn.exec_driver_sql("SET LOCAL idle_in_transaction_session_timeout = 0")
        for org in orgs:
            try:
                conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({TURNS}, {org})")
            except DBAPIError as exc:
                if _sqlstate(exc) != LOCK_NOT_AVAILABLE:
                    raise  # not the wait: said as what it is
                detail = (str(exc.orig).strip().splitlines() or [""])[0]
                raise _busy(org, detail[:200]) from exc
        yield


def _sqlstate(exc: DBAPIError) -> str | None:
    orig = exc.orig
    return getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)


@contextmanager
def _files(folder: Path, org_ids: Iterable[int]) -> Iterator[None]:
    orgs = _orgs(org_ids)
    held: list[int] = []
    try:
        try:
            folder.mkdir(mode=0o775, exist_ok=True)
            for org in orgs:
                # read-only: `flock` needs no write access, so a command run as another user
                # (who can read the file) takes the same turn
                held.append(os.open(folder / f"org-{org}", os.O_RDONLY | os.O_CREAT, 0o664))
        except OSError as exc:
            what = (
                f"Cannot open the span store's write turns in {folder} ({exc.strerror}); the "
                "folder beside DATABASE_URL's file must be writable by every process that "
                "writes spans (the server, migrate-spans, clickhouse-rebuild-rollups)."
            )
            if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EEXIST):
                raise ConfigError(what) from None  # a retry cannot cure it
            raise DatabaseUnavailable(what) from None
        deadline = time.monotonic() + WAIT_S
        for fd, org in zip(held, orgs, strict=True):
            _wait(fd, deadline, org)
        yield
    finally:
        for fd in reversed(held):
            os.close(fd)  # releases its lock


def _wait(fd: int, deadline: float, org: int) -> None:
    pause = 0.001
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise _busy(org, "a lock file beside the SQLite database") from None
            time.sleep(pause)
            pause = min(pause * 2, 0.02)
