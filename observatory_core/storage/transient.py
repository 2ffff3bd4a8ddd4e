"""Which database errors are worth a retry: the connection was lost, the server is restarting,
or the transaction lost a race (serialization failure, deadlock); on the span store, the
engine's own codes for those (`clickhouse/writes.retryable`). Everything else (a bad
statement, a constraint, a missing table) is permanent and must surface as it is."""

from __future__ import annotations

from observatory_core.base.errors import DatabaseUnavailable, QueryTooLarge

# SQLSTATEs: 40001 serialization failure, 40P01 deadlock, 57P01-57P03 admin/crash shutdown and
# "cannot connect now", 53300 too many connections; class 08 is every connection exception.
RETRYABLE_SQLSTATES = frozenset({"40001", "40P01", "57P01", "57P02", "57P03", "53300"})
SQLITE_BUSY = ("database is locked", "database table is locked", "database is busy")


def _one(exc: BaseException) -> bool:
    if isinstance(exc, DatabaseUnavailable):
        return True
    if getattr(exc, "connection_invalidated", False):  # SQLAlchemy saw the connection die
        return True
    orig = getattr(exc, "orig", None) or exc
    sqlstate = getattr(orig, "sqlstate", None)
    if sqlstate:
        return sqlstate in RETRYABLE_SQLSTATES or sqlstate.startswith("08")
    module = type(orig).__module__ or ""
    names = {cls.__name__ for cls in type(orig).__mro__}
    if module.startswith("psycopg") and "OperationalError" in names:
        return (
            True  # no SQLSTATE: the socket closed, "consuming input failed", "connection is closed"
        )
    if module.startswith("sqlite3") and "OperationalError" in names:
        return any(text in str(orig).lower() for text in SQLITE_BUSY)
    if module.startswith("clickhouse_connect"):  # the span store's driver (docs/scale.md)
        from observatory_core.storage.clickhouse.writes import retryable

        return retryable(orig)
    return False


def is_transient(exc: BaseException) -> bool:
    """True when this error, or one it was raised from, is a transient database failure."""
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 8:
        if isinstance(current, QueryTooLarge):  # its own bound: the same read fails again
            return False
        if _one(current):
            return True
        current = current.__cause__  # only explicit chaining: `raise ... from exc`
        seen += 1
    return False


def describe(exc: BaseException) -> str:
    """The error's first line, for a one-line log entry instead of a traceback."""
    orig = getattr(exc, "orig", None) or exc
    first = (str(orig).strip().splitlines() or [""])[0][:200]
    return f"{type(orig).__name__}: {first}" if first else type(orig).__name__
