"""The ClickHouse span store (issue 17, docs/scale.md): spans, trace totals and rollups kept in
ClickHouse (a server, or chDB in-process), chosen by `OBSERVATORY_SPAN_STORE`.

This package is the foundation the span features are being routed onto (ingest writes here
through `ingest/to_clickhouse.py`); what exists and what does not yet is listed in
docs/scale.md. Modules, by what they do:

- `target`: the setting's URL, read and checked (`chdb:///PATH` or `clickhouse://...`)
- `connect`: one clickhouse-connect client for both, and `SpanStore` (client + database)
- `cluster`: where statements put and find tables, one node or `ON CLUSTER`, and the settings
  a cluster's schema changes, writes and reads carry
- `current`: the process's store, the one the setting names, opened on first use
- `layout`: the tables' columns, derived from `storage/schema.py` and the declarations
- `ddl`: the versioned DDL, single node or `ON CLUSTER`, applied idempotently at open
- `writes`: canonical span rows in, each span counted once
- `reads`: the scoped span list (keyset pages) and its totals
- `fold_copies`: each span stored once: a span's older copies deleted (schema version 7, and
  `clickhouse-fold-copies`)
- `migrate_spans`: `DATABASE_URL`'s spans copied in (resumable, checked), for `migrate-spans`
"""
