"""Time budgets for reads: no request can keep the database busy past its budget.

`time_budget(seconds)` marks the current context (an API request); every statement that runs
inside it gets the time that is left. An engine made with `budgeted(engine, seconds)` (the
pages' engine: Streamlit runs page scripts where a context variable set around them does not
reach) gives each of its statements that many seconds. Either way the store enforces the limit
(`Store.install_budget`: PostgreSQL's `statement_timeout`, SQLite's progress handler). A statement stopped
this way surfaces as `QueryTooSlow`, whose message says how to narrow the query. Outside a
budget (exports, rebuilds, migrations, ingest) nothing changes. See docs/architecture.md.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from sqlalchemy import event
from sqlalchemy.engine import Engine

from observatory_core.base.errors import QueryTooLarge, QueryTooSlow
from observatory_core.storage.stores import store_for

_deadline: ContextVar[tuple[float, float] | None] = ContextVar("read_deadline", default=None)


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


def seconds_of_current() -> float | None:
    """The whole of the current budget in seconds (None outside one), for messages."""
    current = _deadline.get()
    return None if current is None else current[1]


def budgeted(engine: Engine, seconds: float) -> Engine:
    """The same engine and pool, with every statement limited to `seconds`."""
    return engine.execution_options(read_budget_s=seconds)


def limit_for(context) -> tuple[float, float] | None:
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


def too_large_message() -> str:
    return (
        "This query needed more memory than one read may use and was stopped. Narrow it: a "
        "shorter time range or more filters."
    )


def raise_spent(seconds: float) -> None:
    raise QueryTooSlow(too_slow_message(seconds))


def _on_error(context) -> None:
    budget = limit_for(context.execution_context)
    store = store_for(context.dialect)
    if budget is not None and store.is_timeout(context.original_exception):
        raise QueryTooSlow(too_slow_message(budget[1])) from context.original_exception
    if store.is_too_large(context.original_exception):
        raise QueryTooLarge(too_large_message()) from context.original_exception


def install(engine: Engine) -> None:
    """Make `engine` honour time budgets (called once per engine by its store)."""
    store_for(engine).install_budget(engine)
    event.listen(engine, "handle_error", _on_error)
