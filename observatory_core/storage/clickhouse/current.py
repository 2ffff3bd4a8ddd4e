"""The process's span store: the one `OBSERVATORY_SPAN_STORE` names, opened on first use and
kept open (a chDB folder is open in one process at a time; a server's client is reused).

`span_store()` answers None when the setting is unset (spans stay in `DATABASE_URL`). A store
that cannot be opened now (a server down, a folder another process holds) raises
`DatabaseUnavailable` and is tried again on the next call, so ingest answers 503 meanwhile.
"""

from __future__ import annotations

import threading

from observatory_core.storage.clickhouse.connect import SpanStore, open_span_store

_OPEN: dict[str, SpanStore] = {}  # by URL; tests put their own store here
_LOCK = threading.Lock()


def span_store_url() -> str | None:
    from observatory_core.base.settings import get_settings

    return get_settings().span_store


def span_store() -> SpanStore | None:
    """The open span store of the setting, or None when spans are kept in `DATABASE_URL`."""
    url = span_store_url()
    if not url:
        return None
    with _LOCK:
        store = _OPEN.get(url)
        if store is None:
            store = _OPEN[url] = open_span_store(url)
        return store


def close_span_stores() -> None:
    """Close what this process opened (server shutdown, a tool switching folders)."""
    with _LOCK:
        stores = list(_OPEN.values())
        _OPEN.clear()
    for store in stores:
        store.close()
