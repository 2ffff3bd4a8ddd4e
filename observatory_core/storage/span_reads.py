"""Where the explorer, the metrics engine, the reports and the alerts read spans and rollups:
the ClickHouse span store when `OBSERVATORY_SPAN_STORE` is set, else `DATABASE_URL`
(docs/scale.md). The one seam their callers (the HTTP API's /traces, /metrics,
/metrics/summary and /changes routes, the pages' loaders in `ui/cached.py`, the rules' backtest,
the alert worker's cycle, the demo's replayed rule history) take their engine from; everything
else (orgs, keys, budgets, settings, alert rules, states and history) keeps `DATABASE_URL`'s
engine. The store is the process's one (`storage/clickhouse/current.py`), the
same ingest writes to: chDB holds one folder per process.
"""

from __future__ import annotations

from sqlalchemy.engine import Engine

from observatory_core.storage.clickhouse.current import span_store


def span_reads(database: Engine) -> Engine:
    """The engine spans are read from: the span store's when the setting names one,
    else `database` (DATABASE_URL's, as given)."""
    store = span_store()
    return store.engine if store is not None else database
