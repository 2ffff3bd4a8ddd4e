"""The process's span store: the one `OBSERVATORY_SPAN_STORE` names, opened on first use and
kept open (a chDB folder is open in one process at a time; a server's client is reused).

`span_store()` answers None when the setting is unset (spans stay in `DATABASE_URL`). A store
that cannot be opened now (a server down, a folder another process holds) raises
`DatabaseUnavailable`, answered 503 with Retry-After: the failure is remembered for
`RETRY_S`, so requests meanwhile are answered at once instead of each waiting on the open,
and no request waits on another's open longer than its own read budget (or `WAIT_S`).
"""

from __future__ import annotations

import threading
import time

from observatory_core.base.errors import DatabaseUnavailable
from observatory_core.storage import budget
from observatory_core.storage.clickhouse.connect import SpanStore, open_span_store

_OPEN: dict[str, SpanStore] = {}  # by URL; tests put their own store here
_FAILED: dict[str, tuple[float, str]] = {}  # URL -> (when, why) of the last failed open
_LOCK = threading.Lock()
RETRY_S = 5.0
WAIT_S = 10.0


def span_store_url() -> str | None:
    from observatory_core.base.settings import get_settings

    return get_settings().span_store


def span_store() -> SpanStore | None:
    """The open span store of the setting, or None when spans are kept in `DATABASE_URL`."""
    url = span_store_url()
    if not url:
        return None
    store = _OPEN.get(url)
    if store is not None:
        return store
    left = budget.remaining()
    if not _LOCK.acquire(timeout=max(0.0, min(WAIT_S, WAIT_S if left is None else left))):
        raise DatabaseUnavailable(
            "The span store is still being opened for another request; try again in a few seconds."
        )
    try:
        store = _OPEN.get(url)
        if store is not None:
            return store
        failed = _FAILED.get(url)
        if failed is not None and time.monotonic() - failed[0] < RETRY_S:
            raise DatabaseUnavailable(failed[1])
        try:
            store = _OPEN[url] = open_span_store(url)
        except DatabaseUnavailable as exc:
            _FAILED[url] = (time.monotonic(), str(exc))
            raise
        _FAILED.pop(url, None)
        return store
    finally:
        _LOCK.release()


def close_span_stores() -> None:
    """Close what this process opened (server shutdown, a tool switching folders)."""
    with _LOCK:
        stores = list(_OPEN.values())
        _OPEN.clear()
        _FAILED.clear()
    for store in stores:
        store.close()
