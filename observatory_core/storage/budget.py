"""Time budgets for reads: no request can keep the database busy past its budget.

`time_budget(seconds)` marks the current context (an API request); every statement that runs
inside it gets the time that is left. An engine made with `budgeted(engine, seconds)` (the
pages' engine: Streamlit runs page scripts where a context variable set around them does not
reach) gives each of its statements that many seconds. Either way the limit is enforced by PostgreSQL through `statement_timeout` (set per
transaction, or for the session on autocommit connections and reset when they go back to the
pool), SQLite through a progress handler that interrupts the statement. A statement stopped
this way surfaces as `QueryTooSlow`, whose message says how to narrow the query. Outside a
budget (exports, rebuilds, migrations, ingest) nothing changes. See docs/architecture.md.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from psycopg import pq
from sqlalchemy import event
from sqlalchemy.engine import Engine

from observatory_core.base.errors import QueryTooSlow

_deadline: ContextVar[tuple[float, float] | None] = ContextVar("read_deadline", default=None)
# PostgreSQL: re-send the timeout only when the time left has shrunk by more than this, so a
# request of many quick statements pays one extra round trip, not one per statement.
_SLACK_MS = 250
_SQLITE_STEPS = 2000  # virtual machine steps between two looks at the clock (~0.1 ms)
_APPLIED = "budget_timeout_ms"
_SESSION = "budget_session_level"


@contextmanager
def time_budget(seconds: float | None) -> Iterator[None]:
    """Run the block's statements under a budget of `seconds` (None or 0: no budget)."""
    if not seconds:
        yield
        return
    token = _deadline.set((time.monotonic() + seconds, seconds))
    try:
        yield
    finally:
        _deadline.reset(token)


def remaining() -> float | None:
    """Seconds left in the current budget (None outside one)."""
    current = _deadline.get()
    return None if current is None else current[0] - time.monotonic()


def budgeted(engine: Engine, seconds: float) -> Engine:
    """The same engine and pool, with every statement limited to `seconds`."""
    return engine.execution_options(read_budget_s=seconds)


def _limit(context) -> tuple[float, float] | None:
    """(deadline, budget seconds) for a statement: the context's budget, else the engine's."""
    current = _deadline.get()
    if current is not None:
        return current
    seconds = context.execution_options.get("read_budget_s") if context is not None else None
    return (time.monotonic() + seconds, seconds) if seconds else None


def too_slow_message(seconds: float) -> str:
    return (
        f"This query ran past its time budget of {seconds:g} s and was stopped. Narrow it: a "
        "shorter time range, more filters, fewer group-bys or a larger bucket."
    )


def _raise_spent(seconds: float) -> None:
    raise QueryTooSlow(too_slow_message(seconds))


def _postgres_before(conn, _cursor, _statement, _params, context, _many) -> None:
    fairy = conn.connection
    dbapi, info = fairy.dbapi_connection, fairy.info
    if not dbapi.autocommit and dbapi.info.transaction_status == pq.TransactionStatus.IDLE:
        info.pop(_APPLIED, None)  # a SET LOCAL ended with its transaction
    limit = _limit(context)
    if limit is None:
        if info.get(_APPLIED):
            _postgres_set(fairy, 0)
        return
    left = limit[0] - time.monotonic()
    if left <= 0:
        _raise_spent(limit[1])
    ms = max(1, int(left * 1000))
    applied = info.get(_APPLIED)
    if applied and applied - ms < _SLACK_MS:
        return
    _postgres_set(fairy, ms)


def _postgres_set(fairy, ms: int) -> None:
    """`SET LOCAL` inside a transaction (undone by its end); for the session on autocommit."""
    dbapi = fairy.dbapi_connection
    local = "false" if dbapi.autocommit else "true"
    dbapi.execute(f"SELECT set_config('statement_timeout', '{int(ms)}', {local})")
    if dbapi.autocommit:
        fairy.info[_SESSION] = bool(ms)
    if ms:
        fairy.info[_APPLIED] = ms
    else:
        fairy.info.pop(_APPLIED, None)


def _postgres_checkin(dbapi_conn, record) -> None:
    """A session-level timeout (set on an autocommit connection) must not outlive its request."""
    record.info.pop(_APPLIED, None)
    if not record.info.pop(_SESSION, False) or dbapi_conn is None:
        return
    try:
        dbapi_conn.execute("SET statement_timeout = 0")
        if not dbapi_conn.autocommit:
            dbapi_conn.commit()
    except Exception:  # a broken connection is discarded by the pool anyway
        record.invalidate()


def _sqlite_before(conn, _cursor, _statement, _params, context, _many) -> None:
    limit = _limit(context)
    dbapi = conn.connection.dbapi_connection
    if limit is None:
        if conn.connection.info.pop(_APPLIED, None):
            dbapi.set_progress_handler(None, 0)
        return
    deadline = limit[0]
    if time.monotonic() >= deadline:
        _raise_spent(limit[1])
    dbapi.set_progress_handler(lambda: time.monotonic() >= deadline, _SQLITE_STEPS)
    conn.connection.info[_APPLIED] = 1


def _sqlite_checkin(dbapi_conn, record) -> None:
    if record.info.pop(_APPLIED, None):
        dbapi_conn.set_progress_handler(None, 0)


def _is_timeout(exc: BaseException, dialect: str) -> bool:
    if dialect == "postgresql":
        return getattr(exc, "sqlstate", None) == "57014"  # query_canceled
    return "interrupted" in str(exc)


def _on_error(context) -> None:
    budget = _limit(context.execution_context)
    if budget is not None and _is_timeout(context.original_exception, context.dialect.name):
        raise QueryTooSlow(too_slow_message(budget[1])) from context.original_exception


def install(engine: Engine) -> None:
    """Make `engine` honour time budgets (called once per engine by `get_engine`)."""
    postgres = engine.dialect.name == "postgresql"
    event.listen(engine, "before_cursor_execute", _postgres_before if postgres else _sqlite_before)
    event.listen(engine.pool, "checkin", _postgres_checkin if postgres else _sqlite_checkin)
    event.listen(engine, "handle_error", _on_error)
