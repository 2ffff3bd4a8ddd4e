"""The span store's per-org write turns as each `DATABASE_URL` store keeps them, shared by every
process using that database (`Store.org_turns`; why, in `storage/clickhouse/org_turns.py` and
docs/span-store-internals.md, "The write turn").

- PostgreSQL: a transaction's advisory lock per org (`pg_advisory_xact_lock(TURNS, org)`, the
  two-key form, whose keys never meet the one-key locks of the rollup fold or the retention
  run), released at commit, or by the server when the holder's connection is lost.
- SQLite: an exclusive `flock` on a file per org beside the database file
  (`<file>.span-turns/org-<id>`, opened read-only, so any user who can read it takes the turn),
  released when the file is closed or its process ends.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

from observatory_core.base.errors import ConfigError, DatabaseUnavailable

TURNS = 7_411_025  # the advisory lock's first key: any fixed number, the same in every process
SUFFIX = ".span-turns"
LOCK_NOT_AVAILABLE = "55P03"  # PostgreSQL's SQLSTATE when `lock_timeout` ends the wait


class TurnBusy(RuntimeError):
    """Another process held an org's turn past the wait."""

    def __init__(self, org: int, detail: str) -> None:
        super().__init__(f"org {org}: {detail}")
        self.org, self.detail = org, detail


@contextmanager
def advisory_turns(engine: Engine, orgs: list[int], wait_s: float) -> Iterator[None]:
    """PostgreSQL: `orgs` (in order, so two writers of several orgs cannot deadlock)."""
    with engine.connect() as conn, conn.begin():
        conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{int(wait_s * 1000)}ms'")
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
                raise TurnBusy(org, detail[:200]) from exc
        yield


def _sqlstate(exc: DBAPIError) -> str | None:
    orig = exc.orig
    return getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)


def turns_folder(database: str) -> Path:
    """Where a SQLite database file's turns are kept."""
    return Path(database).resolve().parent / (Path(database).name + SUFFIX)


@contextmanager
def file_turns(folder: Path, orgs: list[int], wait_s: float) -> Iterator[None]:
    """SQLite: `orgs` (in order) by a lock file each in `folder`."""
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
        deadline = time.monotonic() + wait_s
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
                raise TurnBusy(org, "a lock file beside the SQLite database") from None
            time.sleep(pause)
            pause = min(pause * 2, 0.02)
