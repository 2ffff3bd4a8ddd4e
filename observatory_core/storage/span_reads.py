"""Where the explorer reads spans: the ClickHouse span store when `OBSERVATORY_SPAN_STORE` is
set, else `DATABASE_URL` (docs/scale.md). The one seam the explorer's callers (the HTTP API's
/traces routes, the Traces page's loaders) take their engine from; everything else keeps
`DATABASE_URL`'s engine.
"""

from __future__ import annotations

import threading

from sqlalchemy.engine import Engine

from observatory_core.base.settings import get_settings

_OPEN: dict[str, object] = {}  # URL -> SpanStore, opened once per process
_LOCK = threading.Lock()


def span_store_engine(url: str) -> Engine:
    """The engine of the span store at `url`, the store opened (and its schema brought up to
    date) on first use: chDB holds one folder per process, so the process keeps it open."""
    from observatory_core.storage.clickhouse.connect import open_span_store

    with _LOCK:
        store = _OPEN.get(url)
        if store is None:
            store = _OPEN[url] = open_span_store(url)
    return store.engine


def span_reads(database: Engine) -> Engine:
    """The engine the explorer reads spans from: the span store's when the setting names one,
    else `database` (DATABASE_URL's, as given)."""
    url = get_settings().span_store
    return span_store_engine(url) if url else database


def close_span_stores() -> None:
    """Close every span store this process opened (tests; a process that switches folders)."""
    with _LOCK:
        for store in _OPEN.values():
            store.close()
        _OPEN.clear()
